// Package kubeapi is the little of a Kubernetes API client that flanneld needs, on
// net/http alone: where the API server is and how to authenticate (in-cluster service
// account, a kubeconfig file with certificates, tokens, basic auth or an exec credential
// plugin, or a bare URL: the rules of client-go's clientcmd.BuildConfigFromFlags), an
// HTTP client that sends the credentials (re-reading rotating token files, re-running an
// exec plugin when its credential expires or is refused), the API server's Status
// errors, and a decoder for JSON watch streams.
//
// It replaces k8s.io/client-go and k8s.io/apimachinery in the daemon binary: those
// register every API type at start, which costs megabytes of memory on every node, and
// flanneld uses five calls of the core/v1 API. Objects are decoded by the caller into
// small structs holding only the fields it reads.
package kubeapi
