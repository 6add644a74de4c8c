package kube

import (
	"errors"
	"regexp"
	"strings"
)

// DefaultAnnotationPrefix is --kube-annotation-prefix's default.
const DefaultAnnotationPrefix = "flannel.alpha.coreos.com"

var annotationPrefixRE = regexp.MustCompile(`^(?:[a-z0-9_-]+\.)+[a-z0-9_-]+/(?:[a-z0-9_-]+-)?$`)

// Annotations are the node annotation keys for one --kube-annotation-prefix.
type Annotations struct {
	SubnetKubeManaged   string // "<p>kube-subnet-manager": "true" marks a flannel node
	BackendType         string // "<p>backend-type"
	BackendData         string // "<p>backend-data": BackendData JSON
	BackendV6Data       string // "<p>backend-v6-data"
	PublicIP            string // "<p>public-ip": the IPv4 peers use
	PublicIPv6          string // "<p>public-ipv6"
	PublicIPOverwrite   string // "<p>public-ip-overwrite": user-set, advertised instead of the detected IPv4
	PublicIPv6Overwrite string // "<p>public-ipv6-overwrite"
	NodePublicIP        string // "<p>node-public-ip": user-set, replaces --public-ip
	NodePublicIPv6      string // "<p>node-public-ipv6": user-set, replaces --public-ipv6
	prefix              string
}

// NewAnnotations normalises the prefix as upstream does: at most one "/", appended when
// missing; "-" appended unless it ends in "/" or "-". It must look like "fqdn/" or "fqdn/name-".
func NewAnnotations(prefix string) (Annotations, error) {
	switch strings.Count(prefix, "/") {
	case 0:
		prefix += "/"
	case 1:
	default:
		return Annotations{}, errors.New("subnet/kube: prefix can contain at most single slash")
	}
	if !strings.HasSuffix(prefix, "/") && !strings.HasSuffix(prefix, "-") {
		prefix += "-"
	}
	if !annotationPrefixRE.MatchString(prefix) {
		return Annotations{}, errors.New("subnet/kube: prefix must be in a format: fqdn/[0-9a-z-_]*")
	}
	return Annotations{
		SubnetKubeManaged:   prefix + "kube-subnet-manager",
		BackendType:         prefix + "backend-type",
		BackendData:         prefix + "backend-data",
		BackendV6Data:       prefix + "backend-v6-data",
		PublicIP:            prefix + "public-ip",
		PublicIPv6:          prefix + "public-ipv6",
		PublicIPOverwrite:   prefix + "public-ip-overwrite",
		PublicIPv6Overwrite: prefix + "public-ipv6-overwrite",
		NodePublicIP:        prefix + "node-public-ip",
		NodePublicIPv6:      prefix + "node-public-ipv6",
		prefix:              prefix,
	}, nil
}

// Prefix is the normalised prefix every key starts with.
func (a Annotations) Prefix() string { return a.prefix }

// The index of each key in Annotations.leaseKeys (and so in peerNode.LeaseAnn).
const (
	leaseKeyManaged = iota
	leaseKeyBackendType
	leaseKeyBackendData
	leaseKeyBackendV6Data
	leaseKeyPublicIP
	leaseKeyPublicIPv6
	numLeaseKeys
)

// leaseKeys are the annotations a peer's lease is built from (the informer keeps only these).
func (a Annotations) leaseKeys() [numLeaseKeys]string {
	var k [numLeaseKeys]string
	k[leaseKeyManaged], k[leaseKeyBackendType], k[leaseKeyBackendData] = a.SubnetKubeManaged, a.BackendType, a.BackendData
	k[leaseKeyBackendV6Data], k[leaseKeyPublicIP], k[leaseKeyPublicIPv6] = a.BackendV6Data, a.PublicIP, a.PublicIPv6
	return k
}

// leaseKeyFilter keeps a node's lease annotations, returning the key as a shared string.
func (a Annotations) leaseKeyFilter() annotationFilter {
	keys := map[string]string{}
	for _, k := range a.leaseKeys() {
		keys[k] = k
	}
	return func(key []byte) (string, bool) {
		k, ok := keys[string(key)]
		return k, ok
	}
}
