package lab

import (
	"context"
	"fmt"
)

// NewPodNS creates an empty namespace PodNS(i, j) for a CNI plugin to plumb and returns
// its path; Close removes it.
func (l *Lab) NewPodNS(i, j int) (string, error) {
	if _, err := l.node(i); err != nil {
		return "", err
	}
	if j < 0 {
		return "", fmt.Errorf("lab: pod index must be >= 0, got %d", j)
	}
	ns := l.PodNS(i, j)
	ctx := context.Background()
	if err := deleteNamespaces(ctx, []string{ns}); err != nil {
		return "", err
	}
	if err := addNamespace(ctx, ns); err != nil {
		return "", err
	}
	if err := l.prepareIPv6(ctx, ns); err != nil {
		return "", fmt.Errorf("lab: pod %d on node %d: %w", j, i, err)
	}
	return netnsPath(ns), nil
}

// DeletePodNS removes pod j's namespace on node i (a pod that is gone) and what is in it.
func (l *Lab) DeletePodNS(i, j int) error {
	return deleteNamespaces(context.Background(), []string{l.PodNS(i, j)})
}
