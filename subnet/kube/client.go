package kube

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// restConfig builds the client configuration by client-go's BuildConfigFromFlags rules, as
// upstream, refusing an auth-provider user (none linked in) and a server URL holding a
// password. A non-empty allowlist names the only exec plugins that may run.
func restConfig(apiURL, kubeconfig string, allowlist []string) (*rest.Config, error) {
	rc, err := clientcmd.BuildConfigFromFlags(apiURL, kubeconfig)
	if err != nil {
		return nil, redactURLs(err)
	}
	if u, err := url.Parse(rc.Host); err == nil && u.User != nil {
		// client-go would send them as basic auth and print them in its -v=6 request logs.
		return nil, fmt.Errorf("the server URL %s holds credentials: give them as the kubeconfig user's username and password, or a token", u.Redacted())
	}
	if rc.AuthProvider != nil {
		return nil, fmt.Errorf("kubeconfig user: auth-provider %q is not supported: use an exec credential plugin (users[].user.exec, e.g. the cloud's own kubeconfig plugin) or a token instead", rc.AuthProvider.Name)
	}
	if rc.ExecProvider != nil && len(allowlist) > 0 {
		p := clientcmdapi.PluginPolicy{PolicyType: clientcmdapi.PluginPolicyAllowlist}
		for _, c := range allowlist {
			p.Allowlist = append(p.Allowlist, clientcmdapi.AllowlistEntry{Command: c})
		}
		rc.ExecProvider.PluginPolicy = p
	}
	return rc, nil
}

// redactURLs redacts user information in the URLs err quotes (client-go quotes them as given).
func redactURLs(err error) error {
	msg := err.Error()
	out := msg
	for _, f := range strings.FieldsFunc(msg, func(r rune) bool { return unicode.IsSpace(r) || r == '"' || r == '\'' }) {
		at := strings.LastIndex(f, "@")
		if at < 0 {
			continue
		}
		start := 0
		if i := strings.Index(f, "://"); i >= 0 && i < at {
			start = i + len("://")
		}
		if strings.Contains(f[start:at], ":") {
			out = strings.ReplaceAll(out, f, f[:start]+"xxxxx"+f[at:])
		}
	}
	if out == msg {
		return err
	}
	return errors.New(out)
}

// client is the little of core/v1 flanneld uses, on client-go's REST client.
type client struct {
	rest   rest.Interface
	params runtime.ParameterCodec
	json   runtime.Decoder
	keep   annotationFilter // the annotations a listed node keeps
}

// requestTimeout bounds a get or patch, listTimeout a streamed node list; watches are unbounded.
const (
	requestTimeout = 30 * time.Second
	listTimeout    = 5 * time.Minute
)

func newClient(rc *rest.Config, userAgent string, keep annotationFilter) (*client, error) {
	codecs, params := newCodecs()
	c := rest.CopyConfig(rc)
	c.APIPath = "/api"
	gv := coreV1
	c.GroupVersion = &gv
	c.NegotiatedSerializer = codecs.WithoutConversion()
	c.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	c.ContentType = "application/json"
	if c.UserAgent == "" {
		c.UserAgent = userAgent
	}
	rc2, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, redactURLs(err)
	}
	return &client{rest: rc2, params: params, json: codecs.UniversalDeserializer(), keep: keep}, nil
}

func (c *client) getPod(ctx context.Context, namespace, name string) (*apiPod, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	p := &apiPod{}
	err := c.rest.Get().Namespace(namespace).Resource("pods").Name(name).Do(ctx).Into(p)
	return p, err
}

// getNode reads one node by listing with a field selector: "nodes list" is in every
// flannel ClusterRole, "nodes get" not in older ones. A missing node is NotFound.
func (c *client) getNode(ctx context.Context, name string) (*apiNode, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	opts := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()}
	l, err := c.list(ctx, opts, nil)
	if err != nil {
		return nil, err
	}
	for _, n := range l.Items {
		if n.Name == name {
			return n, nil
		}
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "nodes"}, name)
}

func (c *client) patchNodeStatus(ctx context.Context, name string, patch []byte) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	return c.rest.Patch(types.StrategicMergePatchType).Resource("nodes").Name(name).SubResource("status").Body(patch).Do(ctx).Error()
}

// listNodes is tools/cache's ListFunc: a *peerNodeList of the nodes reduced by slim as the
// response streams in (decodeNodeList), so no whole list of Nodes is ever held.
func (c *client) listNodes(ctx context.Context, opts metav1.ListOptions, slim func(*apiNode) *peerNode) (runtime.Object, error) {
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	l := &peerNodeList{}
	meta, err := c.stream(ctx, opts, c.keep, func(n *apiNode) { l.Items = append(l.Items, slim(n)) })
	if err != nil {
		return nil, err
	}
	l.ListMeta = meta
	return l, nil
}

func (c *client) list(ctx context.Context, opts metav1.ListOptions, keep annotationFilter) (*apiNodeList, error) {
	l := &apiNodeList{}
	meta, err := c.stream(ctx, opts, keep, func(n *apiNode) { l.Items = append(l.Items, n) })
	if err != nil {
		return nil, err
	}
	l.ListMeta = meta
	return l, nil
}

// stream lists the nodes, handing each to add as it is decoded; it returns the list's metadata.
func (c *client) stream(ctx context.Context, opts metav1.ListOptions, keep annotationFilter, add func(*apiNode)) (metav1.ListMeta, error) {
	body, err := c.rest.Get().Resource("nodes").VersionedParams(&opts, c.params).Stream(ctx)
	if err != nil {
		return metav1.ListMeta{}, err
	}
	defer body.Close()
	return decodeNodeList(bufio.NewReaderSize(body, 64<<10), c.json, keep, add)
}

func (c *client) watchNodes(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	req := c.rest.Get().Resource("nodes").VersionedParams(&opts, c.params)
	if opts.TimeoutSeconds != nil {
		req = req.Timeout(time.Duration(*opts.TimeoutSeconds) * time.Second)
	}
	return req.Watch(ctx)
}
