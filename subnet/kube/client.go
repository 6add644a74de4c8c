package kube

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/flannel-go/flannel/pkg/kubeapi"
)

// apiNode is what flanneld reads of a core/v1 Node (JSON); everything else in the object
// is skipped by the decoder.
type apiNode struct {
	Metadata objectMeta `json:"metadata"`
	Spec     struct {
		PodCIDR  string   `json:"podCIDR"`
		PodCIDRs []string `json:"podCIDRs"`
	} `json:"spec"`
	Status struct {
		Conditions []nodeCondition `json:"conditions"`
	} `json:"status"`
}

type objectMeta struct {
	Name            string            `json:"name"`
	ResourceVersion string            `json:"resourceVersion"`
	Annotations     map[string]string `json:"annotations"`
}

// nodeCondition is a core/v1 NodeCondition; the timestamps are written (KeepLease), not read.
type nodeCondition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	LastHeartbeatTime  string `json:"lastHeartbeatTime,omitempty"`
	LastTransitionTime string `json:"lastTransitionTime,omitempty"`
	Reason             string `json:"reason,omitempty"`
	Message            string `json:"message,omitempty"`
}

// The NetworkUnavailable condition and the condition status values.
const (
	condNetworkUnavailable = "NetworkUnavailable"
	condFalse              = "False"
)

// apiPod is what flanneld reads of a core/v1 Pod.
type apiPod struct {
	Spec struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
}

// apiNodeList is a NodeList as JSON (decodeNodeList's fallback).
type apiNodeList struct {
	Metadata struct {
		ResourceVersion string `json:"resourceVersion"`
		Continue        string `json:"continue"`
	} `json:"metadata"`
	Items []apiNode `json:"items"`
}

// client is the little of the core/v1 API flanneld uses: pods get; nodes get, list,
// watch; nodes/status patch.
type client struct {
	api *kubeapi.Client
}

const strategicMergePatch = "application/strategic-merge-patch+json"

func nodePath(name string) string { return "/api/v1/nodes/" + url.PathEscape(name) }

func (c *client) getPod(ctx context.Context, namespace, name string) (*apiPod, error) {
	p := &apiPod{}
	err := c.api.Get(ctx, "/api/v1/namespaces/"+url.PathEscape(namespace)+"/pods/"+url.PathEscape(name), p)
	return p, err
}

func (c *client) getNode(ctx context.Context, name string) (*apiNode, error) {
	n := &apiNode{}
	err := c.api.Get(ctx, nodePath(name), n)
	return n, err
}

// patchNodeStatus sends a strategic-merge patch to nodes/<name>/status.
func (c *client) patchNodeStatus(ctx context.Context, name string, patch []byte) error {
	return c.api.Patch(ctx, nodePath(name)+"/status", strategicMergePatch, patch)
}

// nodeListQuery is one node list request: at resourceVersion ("0": from the API server's
// watch cache; "": the latest, from etcd), at most limit nodes (0: all), from a previous
// page's continue token.
type nodeListQuery struct {
	resourceVersion string
	limit           int
	cont            string
}

// listNodesStream starts a node list and returns the raw response (protobuf if the
// server agrees) for decodeNodeList.
func (c *client) listNodesStream(ctx context.Context, lq nodeListQuery) (io.ReadCloser, error) {
	q := url.Values{}
	if lq.resourceVersion != "" {
		q.Set("resourceVersion", lq.resourceVersion)
	}
	if lq.limit > 0 {
		q.Set("limit", strconv.Itoa(lq.limit))
	}
	if lq.cont != "" {
		q.Set("continue", lq.cont)
	}
	resp, err := c.api.Do(ctx, kubeapi.Request{
		Method: http.MethodGet, Path: "/api/v1/nodes", Query: q,
		Accept: "application/vnd.kubernetes.protobuf, application/json",
	})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return resp.Body, nil
}

// watchNodes watches the nodes from resourceVersion, with bookmarks, for at most
// timeoutSeconds (the server then ends the stream).
func (c *client) watchNodes(ctx context.Context, resourceVersion string, timeoutSeconds int) (io.ReadCloser, error) {
	q := url.Values{}
	q.Set("resourceVersion", resourceVersion)
	q.Set("allowWatchBookmarks", "true")
	q.Set("timeoutSeconds", strconv.Itoa(timeoutSeconds))
	body, err := c.api.Watch(ctx, "/api/v1/nodes", q)
	if err != nil {
		return nil, fmt.Errorf("watch nodes: %w", err)
	}
	return body, nil
}
