package kube

import (
	"context"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// client is the little of the core/v1 API flanneld uses (pods get; nodes get, list,
// watch; nodes/status patch). It is built on a scheme holding only core/v1, instead of
// client-go's clientset, whose scheme registers every API group at start (megabytes of
// memory that a node daemon never needs).
type client struct {
	rc     *rest.RESTClient
	params runtime.ParameterCodec
}

func newClient(cfg *rest.Config) (*client, error) {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		return nil, err
	}
	metav1.AddToGroupVersion(s, corev1.SchemeGroupVersion)
	cfg = rest.CopyConfig(cfg)
	cfg.APIPath = "/api"
	gv := corev1.SchemeGroupVersion
	cfg.GroupVersion = &gv
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(s).WithoutConversion()
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return &client{rc: rc, params: runtime.NewParameterCodec(s)}, nil
}

func (c *client) getPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	err := c.rc.Get().Namespace(namespace).Resource("pods").Name(name).
		VersionedParams(&metav1.GetOptions{}, c.params).Do(ctx).Into(pod)
	return pod, err
}

func (c *client) getNode(ctx context.Context, name string) (*corev1.Node, error) {
	n := &corev1.Node{}
	err := c.rc.Get().Resource("nodes").Name(name).VersionedParams(&metav1.GetOptions{}, c.params).Do(ctx).Into(n)
	return n, err
}

// patchNodeStatus sends a strategic-merge patch to nodes/<name>/status.
func (c *client) patchNodeStatus(ctx context.Context, name string, patch []byte) error {
	return c.rc.Patch(types.StrategicMergePatchType).Resource("nodes").Name(name).SubResource("status").
		VersionedParams(&metav1.PatchOptions{}, c.params).Body(patch).Do(ctx).Error()
}

func (c *client) watchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.rc.Get().Resource("nodes").VersionedParams(&opts, c.params).Watch(ctx)
}

// listNodesStream starts a node list and returns the raw response (protobuf if the server
// agrees) for decodeNodeList.
func (c *client) listNodesStream(ctx context.Context, opts metav1.ListOptions) (io.ReadCloser, error) {
	body, err := c.rc.Get().Resource("nodes").VersionedParams(&opts, c.params).
		SetHeader("Accept", "application/vnd.kubernetes.protobuf, application/json").Stream(ctx)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return body, nil
}
