package kubeapi

import "google.golang.org/protobuf/encoding/protowire"

// ProtobufMagic starts every object in the API server's protobuf encoding; a
// runtime.Unknown envelope follows (typeMeta in field 1, the object in field 2).
const ProtobufMagic = "k8s\x00"

// ProtoFields calls f with each field of the protobuf message b: its number, wire type,
// and the bytes (length-delimited) or number (varint) it holds. It stops at f's first
// error, which it returns, or at a malformed field (a protowire parse error).
func ProtoFields(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, n uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
