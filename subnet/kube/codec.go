package kube

import (
	"errors"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	"github.com/flannel-go/flannel/subnet"
)

// apiNode is what flanneld decodes of a core/v1 Node; the decoder skips the rest.
type apiNode struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		PodCIDR  string   `json:"podCIDR,omitempty"`
		PodCIDRs []string `json:"podCIDRs,omitempty"`
	} `json:"spec"`
	Status struct {
		Conditions []nodeCondition `json:"conditions,omitempty"`
	} `json:"status"`
	// leaseTooLarge: a kept annotation alone exceeded subnet.MaxValueSize and was dropped.
	leaseTooLarge bool
}

// nodeCondition is a core/v1 NodeCondition; timestamps are written (KeepLease), not read.
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

type apiNodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []*apiNode `json:"items"`
}

type apiPod struct {
	metav1.TypeMeta `json:",inline"`
	Spec            struct {
		NodeName string `json:"nodeName,omitempty"`
	} `json:"spec"`
}

func (n *apiNode) DeepCopyObject() runtime.Object {
	c := &apiNode{TypeMeta: n.TypeMeta, Spec: n.Spec, Status: n.Status, leaseTooLarge: n.leaseTooLarge}
	n.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	c.Spec.PodCIDRs = append([]string(nil), n.Spec.PodCIDRs...)
	c.Status.Conditions = append([]nodeCondition(nil), n.Status.Conditions...)
	return c
}

func (l *apiNodeList) DeepCopyObject() runtime.Object {
	c := &apiNodeList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&c.ListMeta)
	for _, n := range l.Items {
		c.Items = append(c.Items, n.DeepCopyObject().(*apiNode))
	}
	return c
}

func (p *apiPod) DeepCopyObject() runtime.Object { c := *p; return &c }

var coreV1 = schema.GroupVersion{Version: "v1"}

// newCodecs returns JSON and protobuf serializers over only meta/v1 and our slim types.
func newCodecs() (serializer.CodecFactory, runtime.ParameterCodec) {
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, coreV1)
	s.AddKnownTypeWithName(coreV1.WithKind("Node"), &apiNode{})
	s.AddKnownTypeWithName(coreV1.WithKind("NodeList"), &apiNodeList{})
	s.AddKnownTypeWithName(coreV1.WithKind("Pod"), &apiPod{})
	return serializer.NewCodecFactory(s), runtime.NewParameterCodec(s)
}

// Protobuf field numbers of the API objects, as far as they are read.
const (
	fieldObjMeta, fieldObjSpec, fieldObjStatus = 1, 2, 3 // Node, Pod, and metadata/items of a list
	fieldMetaName                              = 1
	fieldMetaResourceVersion                   = 6
	fieldMetaCreationTimestamp                 = 8
	fieldMetaAnnotations                       = 12
	fieldTimeSeconds, fieldTimeNanos           = 1, 2
	fieldMapKey, fieldMapValue                 = 1, 2
	fieldNodeSpecPodCIDR                       = 1
	fieldNodeSpecPodCIDRs                      = 7
	fieldNodeStatusConditions                  = 4
	fieldConditionType                         = 1
	fieldConditionStatus                       = 2
	fieldConditionReason                       = 5
	fieldListItems                             = 2
	fieldListMetaResourceVersion               = 2
	fieldListMetaContinue                      = 3
	fieldPodSpecNodeName                       = 10
)

var errMalformed = errors.New("malformed protobuf message")

// protoFields calls f per field of protobuf message b until f's first error or errMalformed.
func protoFields(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errMalformed
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
			return errMalformed
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

func bytesFields(b []byte, f func(num protowire.Number, v []byte) error) error {
	return protoFields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		return f(num, v)
	})
}

// Reset and Unmarshal make apiNode decodable by apimachinery's protobuf serializer.
func (n *apiNode) Reset() { *n = apiNode{} }

// Unmarshal decodes a protobuf Node (without the envelope), keeping every annotation.
func (n *apiNode) Unmarshal(b []byte) error { return n.unmarshal(b, nil) }

// annotationFilter says which annotations to keep, giving the key as a shared string; nil: all.
type annotationFilter func(key []byte) (string, bool)

func (n *apiNode) unmarshal(b []byte, keep annotationFilter) error {
	return bytesFields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case fieldObjMeta:
			return n.unmarshalMeta(v, keep)
		case fieldObjSpec:
			return bytesFields(v, func(num protowire.Number, v []byte) error {
				switch num {
				case fieldNodeSpecPodCIDR:
					n.Spec.PodCIDR = string(v)
				case fieldNodeSpecPodCIDRs:
					n.Spec.PodCIDRs = append(n.Spec.PodCIDRs, string(v))
				}
				return nil
			})
		case fieldObjStatus:
			return bytesFields(v, func(num protowire.Number, v []byte) error {
				if num == fieldNodeStatusConditions {
					return n.unmarshalCondition(v)
				}
				return nil
			})
		}
		return nil
	})
}

func (n *apiNode) unmarshalMeta(b []byte, keep annotationFilter) error {
	return bytesFields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case fieldMetaName:
			n.Name = string(v)
		case fieldMetaResourceVersion:
			n.ResourceVersion = string(v)
		case fieldMetaCreationTimestamp:
			var sec, nsec uint64
			if err := protoFields(v, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
				switch {
				case num == fieldTimeSeconds && typ == protowire.VarintType:
					sec = x
				case num == fieldTimeNanos && typ == protowire.VarintType:
					nsec = x
				}
				return nil
			}); err != nil {
				return err
			}
			n.CreationTimestamp = metav1.NewTime(time.Unix(int64(sec), int64(int32(nsec))).Local()) //nolint:gosec // int64 and int32 in the schema
		case fieldMetaAnnotations:
			var key, val []byte
			if err := bytesFields(v, func(num protowire.Number, v []byte) error {
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
			k := ""
			if keep != nil {
				var ok bool
				if k, ok = keep(key); !ok {
					return nil
				}
				if len(val) > subnet.MaxValueSize {
					n.leaseTooLarge = true // not copied: the lease is too large anyway
					return nil
				}
			} else {
				k = string(key)
			}
			if n.Annotations == nil {
				n.Annotations = map[string]string{}
			}
			n.Annotations[k] = string(val)
		}
		return nil
	})
}

func (n *apiNode) unmarshalCondition(b []byte) error {
	var typ, status, reason []byte
	if err := bytesFields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case fieldConditionType:
			typ = v
		case fieldConditionStatus:
			status = v
		case fieldConditionReason:
			reason = v
		}
		return nil
	}); err != nil {
		return err
	}
	if string(typ) == condNetworkUnavailable {
		n.Status.Conditions = append(n.Status.Conditions, nodeCondition{Type: condNetworkUnavailable, Status: string(status), Reason: string(reason)})
	}
	return nil
}

// Reset and Unmarshal make apiNodeList decodable by apimachinery's protobuf serializer.
func (l *apiNodeList) Reset() { *l = apiNodeList{} }

func (l *apiNodeList) Unmarshal(b []byte) error {
	return bytesFields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case fieldObjMeta:
			return unmarshalListMeta(v, &l.ListMeta)
		case fieldListItems:
			n := &apiNode{}
			if err := n.Unmarshal(v); err != nil {
				return err
			}
			l.Items = append(l.Items, n)
		}
		return nil
	})
}

func unmarshalListMeta(b []byte, m *metav1.ListMeta) error {
	return bytesFields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case fieldListMetaResourceVersion:
			m.ResourceVersion = string(v)
		case fieldListMetaContinue:
			m.Continue = string(v)
		}
		return nil
	})
}

// Reset and Unmarshal make apiPod decodable by apimachinery's protobuf serializer.
func (p *apiPod) Reset() { *p = apiPod{} }

func (p *apiPod) Unmarshal(b []byte) error {
	return bytesFields(b, func(num protowire.Number, v []byte) error {
		if num != fieldObjSpec {
			return nil
		}
		return bytesFields(v, func(num protowire.Number, v []byte) error {
			if num == fieldPodSpecNodeName {
				p.Spec.NodeName = string(v)
			}
			return nil
		})
	})
}
