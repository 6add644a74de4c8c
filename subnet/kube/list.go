package kube

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// maxNodeBytes bounds one encoded Node in a list (the API server's own limit on an object
// is about 1.5 MiB); a larger length means a corrupt stream.
const maxNodeBytes = 16 << 20

// listSlim is the informer's list: the nodes as the API server lists them (with the
// requested resource version, usually "0": from its watch cache, in one response), decoded
// one Node at a time from the response stream and reduced to a slim node (slimNode) at
// once, so that the whole list is never held in memory as Node objects. (Where the API
// server supports streaming lists, the informer uses a watch instead and never calls this.)
func (m *Manager) listSlim(ctx context.Context, o metav1.ListOptions) (*peerNodeList, error) {
	opts := metav1.ListOptions{
		LabelSelector: o.LabelSelector, FieldSelector: o.FieldSelector,
		ResourceVersion: o.ResourceVersion, ResourceVersionMatch: o.ResourceVersionMatch, TimeoutSeconds: o.TimeoutSeconds,
	}
	body, err := m.cs.listNodesStream(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return decodeNodeList(bufio.NewReaderSize(body, 64<<10), m.slim)
}

// protoMagic starts every object in the API server's protobuf encoding.
var protoMagic = []byte("k8s\x00")

// decodeNodeList reads a NodeList (protobuf envelope, or JSON) and applies slim to each
// node as soon as it is decoded.
func decodeNodeList(r *bufio.Reader, slim func(*corev1.Node) *peerNode) (*peerNodeList, error) {
	head, err := r.Peek(len(protoMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read node list: %w", err)
	}
	out := &peerNodeList{}
	add := func(n *corev1.Node) error {
		out.Items = append(out.Items, slim(n))
		return nil
	}
	if !bytes.Equal(head, protoMagic) {
		// JSON: decoded whole (servers answer protobuf for core types; this is a fallback).
		var l corev1.NodeList
		if err := json.NewDecoder(r).Decode(&l); err != nil {
			return nil, fmt.Errorf("decode node list: %w", err)
		}
		out.ListMeta = l.ListMeta
		for i := range l.Items {
			if err := add(&l.Items[i]); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	if _, err := r.Discard(len(protoMagic)); err != nil {
		return nil, err
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
			return nil, err
		}
		if num != 2 || typ != protowire.BytesType {
			if err := skipField(r, typ); err != nil {
				return nil, err
			}
			continue
		}
		size, err := readVarint(r)
		if err != nil {
			return nil, err
		}
		found = true
		if err := decodeNodeListBody(io.LimitReader(r, int64(size)), out, add); err != nil {
			return nil, err
		}
	}
	if !found {
		return nil, errors.New("decode node list: no list in the response")
	}
	return out, nil
}

func decodeNodeListBody(r io.Reader, out *peerNodeList, add func(*corev1.Node) error) error {
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
		size, err := readVarint(br)
		if err != nil {
			return err
		}
		if size > maxNodeBytes {
			return fmt.Errorf("decode node list: field of %d bytes", size)
		}
		if uint64(cap(buf)) < size {
			buf = make([]byte, size)
		}
		buf = buf[:size]
		if _, err := io.ReadFull(br, buf); err != nil {
			return fmt.Errorf("decode node list: %w", err)
		}
		if num == 1 {
			if err := out.ListMeta.Unmarshal(buf); err != nil {
				return fmt.Errorf("decode node list metadata: %w", err)
			}
			continue
		}
		var n corev1.Node
		if err := n.Unmarshal(buf); err != nil {
			return fmt.Errorf("decode node: %w", err)
		}
		if err := add(&n); err != nil {
			return err
		}
	}
}

func readVarint(r io.ByteReader) (uint64, error) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		b, err := r.ReadByte()
		if err != nil {
			if shift > 0 && errors.Is(err, io.EOF) {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, errors.New("decode node list: varint overflow")
}

func readTag(r io.ByteReader) (protowire.Number, protowire.Type, error) {
	v, err := readVarint(r)
	if err != nil {
		return 0, 0, err
	}
	num, typ := protowire.DecodeTag(v)
	if num < protowire.MinValidNumber {
		return 0, 0, errors.New("decode node list: bad field number")
	}
	return num, typ, nil
}

func skipField(r *bufio.Reader, typ protowire.Type) error {
	var n uint64
	switch typ {
	case protowire.VarintType:
		_, err := readVarint(r)
		return err
	case protowire.Fixed32Type:
		n = 4
	case protowire.Fixed64Type:
		n = 8
	case protowire.BytesType:
		size, err := readVarint(r)
		if err != nil {
			return err
		}
		n = size
	default:
		return fmt.Errorf("decode node list: unsupported wire type %d", typ)
	}
	if _, err := r.Discard(int(n)); err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}
