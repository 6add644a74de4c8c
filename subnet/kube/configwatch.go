package kube

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/subnet"
)

var _ subnet.ConfigWatcher = (*Manager)(nil)

// netConfigPoll: kubelet itself takes up to a minute to update a mounted ConfigMap.
const netConfigPoll = 10 * time.Second

// WatchConfig implements subnet.ConfigWatcher by polling --net-config-path every 10 s.
func (m *Manager) WatchConfig(ctx context.Context, changed func(text string)) error {
	watchFile(ctx, m.cfg.NetConfigPath, netConfigPoll, changed)
	return nil
}

func watchFile(ctx context.Context, path string, period time.Duration, changed func(string)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		data, err := os.ReadFile(path)
		switch {
		case err == nil:
			changed(string(data))
		case errors.Is(err, fs.ErrNotExist):
			changed("")
		default:
			klog.V(2).InfoS("Cannot read the network config file to follow it", "path", path, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
