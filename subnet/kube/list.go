package kube

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/kubeapi"
)

// maxNodeBytes bounds one encoded Node in a list (the API server's own limit on an object
// is about 1.5 MiB); a larger length means a corrupt stream.
const maxNodeBytes = 16 << 20

// listPageSize is the page size of a node list from etcd (client-go's pager's).
const listPageSize = 500

// listSlim lists the nodes at resourceVersion ("0": from the API server's watch cache, in
// one response; "": the latest, from etcd, in pages of listPageSize as client-go's pager
// asks for them, so that the API server and etcd never build the whole list at once),
// each page decoded one Node at a time from the response stream and reduced to a peer
// node at once, so that the whole list is never held in memory as Node objects. When a
// page's continue token has expired (etcd compacted meanwhile) it lists again in one
// response, as client-go's pager does.
func (m *Manager) listSlim(ctx context.Context, resourceVersion string) (*peerNodeList, error) {
	if resourceVersion != "" {
		return m.listPage(ctx, nodeListQuery{resourceVersion: resourceVersion})
	}
	out := &peerNodeList{}
	q := nodeListQuery{limit: listPageSize}
	if m.pageSize > 0 {
		q.limit = m.pageSize
	}
	for {
		page, err := m.listPage(ctx, q)
		if err != nil && q.cont != "" && kubeapi.IsGone(err) {
			klog.InfoS("Node list continuation expired; listing the nodes in one response", "reason", err.Error())
			return m.listPage(ctx, nodeListQuery{})
		}
		if err != nil {
			return nil, err
		}
		out.Items = append(out.Items, page.Items...)
		out.ResourceVersion = page.ResourceVersion
		if page.Continue == "" {
			return out, nil
		}
		q.cont = page.Continue
	}
}

// listPage runs one node list request and decodes its response.
func (m *Manager) listPage(ctx context.Context, q nodeListQuery) (*peerNodeList, error) {
	body, err := m.cs.listNodesStream(ctx, q)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return decodeNodeList(bufio.NewReaderSize(body, 64<<10), m.ann)
}

// decodeNodeList reads a NodeList (protobuf envelope, or JSON) and reduces each node to a
// peerNode as soon as it is read. From protobuf, only the fields a peerNode keeps are
// decoded at all (decodePeerNode); the rest of each Node is skipped unparsed.
func decodeNodeList(r *bufio.Reader, ann Annotations) (*peerNodeList, error) {
	head, err := r.Peek(len(kubeapi.ProtobufMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read node list: %w", err)
	}
	out := &peerNodeList{}
	if string(head) != kubeapi.ProtobufMagic {
		// JSON: decoded whole (servers answer protobuf for core types; this is a fallback).
		var l apiNodeList
		if err := json.NewDecoder(r).Decode(&l); err != nil {
			return nil, fmt.Errorf("decode node list: %w", err)
		}
		out.ResourceVersion, out.Continue = l.Metadata.ResourceVersion, l.Metadata.Continue
		for i := range l.Items {
			out.Items = append(out.Items, slimWith(ann, &l.Items[i]))
		}
		return out, nil
	}
	if err := decodeProtoNodeList(r, out, ann); err != nil {
		return nil, fmt.Errorf("decode node list: %w", err)
	}
	return out, nil
}

// decodeProtoNodeList reads a NodeList in the protobuf envelope into out.
func decodeProtoNodeList(r *bufio.Reader, out *peerNodeList, ann Annotations) error {
	if _, err := r.Discard(len(kubeapi.ProtobufMagic)); err != nil {
		return err
	}
	// The envelope is a runtime.Unknown: field 2 (raw) holds the NodeList, whose field 1 is
	// the list metadata and field 2 each item.
	found := false
	for {
		num, typ, err := readTag(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if num != 2 || typ != protowire.BytesType {
			if err := skipField(r, typ); err != nil {
				return err
			}
			continue
		}
		size, err := binary.ReadUvarint(r)
		if err != nil {
			return err
		}
		found = true
		if err := decodeNodeListBody(io.LimitReader(r, int64(size)), out, ann); err != nil {
			return err
		}
	}
	if !found {
		return errors.New("no list in the response")
	}
	return nil
}

func decodeNodeListBody(r io.Reader, out *peerNodeList, ann Annotations) error {
	keep := map[string]int{}
	for i, k := range ann.leaseKeys() {
		keep[k] = i
	}
	br := bufio.NewReader(r)
	var buf []byte
	for {
		num, typ, err := readTag(br)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if typ != protowire.BytesType || (num != 1 && num != 2) {
			if err := skipField(br, typ); err != nil {
				return err
			}
			continue
		}
		size, err := binary.ReadUvarint(br)
		if err != nil {
			return err
		}
		if size > maxNodeBytes {
			return fmt.Errorf("field of %d bytes", size)
		}
		if uint64(cap(buf)) < size {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if _, err := io.ReadFull(br, buf); err != nil {
			return fmt.Errorf("read field of %d bytes: %w", size, err)
		}
		if num == 1 {
			if err := eachField(buf, func(num protowire.Number, v []byte) error {
				switch num {
				case fieldListMetaResourceVersion:
					out.ResourceVersion = string(v)
				case fieldListMetaContinue:
					out.Continue = string(v)
				}
				return nil
			}); err != nil {
				return fmt.Errorf("list metadata: %w", err)
			}
			continue
		}
		p, err := decodePeerNode(buf, keep)
		if err != nil {
			return fmt.Errorf("decode node: %w", err)
		}
		out.Items = append(out.Items, p)
	}
}

func readTag(r io.ByteReader) (protowire.Number, protowire.Type, error) {
	v, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, 0, err
	}
	num, typ := protowire.DecodeTag(v)
	if num < protowire.MinValidNumber {
		return 0, 0, errors.New("bad field number")
	}
	return num, typ, nil
}

func skipField(r *bufio.Reader, typ protowire.Type) error {
	var n uint64
	switch typ {
	case protowire.VarintType:
		_, err := binary.ReadUvarint(r)
		return err
	case protowire.Fixed32Type:
		n = 4
	case protowire.Fixed64Type:
		n = 8
	case protowire.BytesType:
		size, err := binary.ReadUvarint(r)
		if err != nil {
			return err
		}
		n = size
	default:
		return fmt.Errorf("unsupported wire type %d", typ)
	}
	if _, err := r.Discard(int(n)); err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}

// Field numbers of the Kubernetes protobuf encoding (k8s.io/api/core/v1 and
// k8s.io/apimachinery/pkg/apis/meta/v1 generated.proto).
const (
	fieldNodeMetadata    = 1 // Node.metadata (ObjectMeta)
	fieldNodeSpec        = 2 // Node.spec (NodeSpec)
	fieldMetaName        = 1 // ObjectMeta.name
	fieldMetaAnnotations = 12
	// ListMeta.resourceVersion and continue
	fieldListMetaResourceVersion = 2
	fieldListMetaContinue        = 3
	fieldSpecPodCIDR             = 1 // NodeSpec.podCIDR
	fieldSpecPodCIDRs            = 7 // NodeSpec.podCIDRs
	fieldMapKey, fieldMapValue   = 1, 2
	errNodeMsg                   = "malformed Node"
)

// decodePeerNode reads a protobuf Node and keeps only the name, the annotations in keep
// (key -> index in peerNode.LeaseAnn) and the pod CIDRs (spec.podCIDRs, else
// spec.podCIDR).
func decodePeerNode(b []byte, keep map[string]int) (*peerNode, error) {
	p := &peerNode{}
	var podCIDR string
	err := eachField(b, func(num protowire.Number, v []byte) error {
		switch num {
		case fieldNodeMetadata:
			return eachField(v, func(num protowire.Number, v []byte) error {
				switch num {
				case fieldMetaName:
					p.Name = string(v)
				case fieldMetaAnnotations:
					var key, val []byte
					if err := eachField(v, func(num protowire.Number, v []byte) error {
						switch num {
						case fieldMapKey:
							key = v
						case fieldMapValue:
							val = v
						}
						return nil
					}); err != nil {
						return err
					}
					if i, ok := keep[string(key)]; ok {
						p.LeaseAnn[i] = string(val)
					}
				}
				return nil
			})
		case fieldNodeSpec:
			return eachField(v, func(num protowire.Number, v []byte) error {
				switch num {
				case fieldSpecPodCIDR:
					podCIDR = string(v)
				case fieldSpecPodCIDRs:
					p.PodCIDRs = append(p.PodCIDRs, string(v))
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(p.PodCIDRs) == 0 && podCIDR != "" {
		p.PodCIDRs = []string{podCIDR}
	}
	return p, nil
}

// eachField calls fn with every length-delimited field of the message b (other wire types
// are skipped); a malformed message is errNodeMsg, fn's error is returned as it is.
func eachField(b []byte, fn func(protowire.Number, []byte) error) error {
	var ferr error
	err := kubeapi.ProtoFields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ == protowire.BytesType {
			ferr = fn(num, v)
		}
		return ferr
	})
	switch {
	case ferr != nil:
		return ferr
	case err != nil:
		return errors.New(errNodeMsg)
	}
	return nil
}
