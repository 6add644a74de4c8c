package kube

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/flannel-go/flannel/subnet"
)

// protobufMagic starts every protobuf object; a runtime.Unknown envelope follows.
const protobufMagic = "k8s\x00"

// maxNodeBytes bounds one encoded Node (the API server's limit is ~1.5 MiB).
const maxNodeBytes = 16 << 20

// decodeNodeList reads a protobuf NodeList as it streams, one Node at a time, keeping what keep
// selects, and hands each Node to add as it is decoded (add may keep it); it returns the list
// metadata. A cached list is one response of any size. JSON is decoded whole.
func decodeNodeList(r *bufio.Reader, json runtime.Decoder, keep annotationFilter, add func(*apiNode)) (metav1.ListMeta, error) {
	head, err := r.Peek(len(protobufMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return metav1.ListMeta{}, fmt.Errorf("read node list: %w", err)
	}
	if string(head) != protobufMagic {
		data, err := io.ReadAll(r)
		if err != nil {
			return metav1.ListMeta{}, fmt.Errorf("read node list: %w", err)
		}
		l := &apiNodeList{}
		if _, _, err := json.Decode(data, nil, l); err != nil {
			return metav1.ListMeta{}, fmt.Errorf("decode node list: %w", err)
		}
		for _, n := range l.Items {
			n.keepAnnotations(keep)
			add(n)
		}
		return l.ListMeta, nil
	}
	var meta metav1.ListMeta
	if err := decodeProtoNodeList(r, &meta, keep, add); err != nil {
		return metav1.ListMeta{}, fmt.Errorf("decode node list: %w", err)
	}
	return meta, nil
}

// keepAnnotations keeps what keep selects, dropping any value over MaxValueSize (leaseTooLarge).
func (n *apiNode) keepAnnotations(keep annotationFilter) {
	if keep == nil || n.Annotations == nil {
		return
	}
	var kept map[string]string
	for k, v := range n.Annotations {
		if key, ok := keep([]byte(k)); ok {
			if len(v) > subnet.MaxValueSize {
				n.leaseTooLarge = true
				continue
			}
			if kept == nil {
				kept = map[string]string{}
			}
			kept[key] = v
		}
	}
	n.Annotations = kept
}

func decodeProtoNodeList(r *bufio.Reader, meta *metav1.ListMeta, keep annotationFilter, add func(*apiNode)) error {
	if _, err := r.Discard(len(protobufMagic)); err != nil {
		return err
	}
	// runtime.Unknown's field 2 holds the NodeList: field 1 list metadata, field 2 each item.
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
		if err := decodeNodeListBody(io.LimitReader(r, int64(size)), meta, keep, add); err != nil { //nolint:gosec // bounded by the stream
			return err
		}
	}
	if !found {
		return errors.New("no list in the response")
	}
	return nil
}

func decodeNodeListBody(r io.Reader, meta *metav1.ListMeta, keep annotationFilter, add func(*apiNode)) error {
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
		if typ != protowire.BytesType || (num != fieldObjMeta && num != fieldListItems) {
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
		if num == fieldObjMeta {
			if err := unmarshalListMeta(buf, meta); err != nil {
				return fmt.Errorf("list metadata: %w", err)
			}
			continue
		}
		n := &apiNode{}
		if err := n.unmarshal(buf, keep); err != nil {
			return fmt.Errorf("decode node: %w", err)
		}
		add(n)
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
	if _, err := r.Discard(int(n)); err != nil { //nolint:gosec // Discard fails on a short stream
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}
