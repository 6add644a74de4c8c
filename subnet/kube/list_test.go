package kube

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"

	"github.com/flannel-go/flannel/subnet"
)

var created = metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))

func testNodeList(n int) *corev1.NodeList {
	l := &corev1.NodeList{TypeMeta: metav1.TypeMeta{Kind: "NodeList", APIVersion: "v1"}, ListMeta: metav1.ListMeta{ResourceVersion: "4711"}}
	for i := range n {
		l.Items = append(l.Items, *testNode(i))
	}
	return l
}

// testNode is a kubelet-like Node: labels, taints, images, managed fields, conditions.
func testNode(i int) *corev1.Node {
	cidrs := []string{fmt.Sprintf("10.244.%d.0/24", i)}
	if i%2 == 1 { // dual stack: spec.podCIDRs set as well
		cidrs = append(cidrs, fmt.Sprintf("fd00:%x::/64", i))
	}
	nd := &corev1.Node{TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("n%d", i), Annotations: peerAnn(fmt.Sprintf("192.0.2.%d", 10+i), "0e:00:00:00:00:01")}}
	nd.Spec.PodCIDR = cidrs[0]
	if len(cidrs) > 1 {
		nd.Spec.PodCIDRs = cidrs
	}
	nd.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate}}
	nd.Spec.Taints = []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}
	nd.ResourceVersion = fmt.Sprint(100 + i)
	nd.CreationTimestamp = created
	nd.Labels = map[string]string{"kubernetes.io/os": "linux"}
	nd.Status.Images = []corev1.ContainerImage{{Names: []string{"registry.example.com/a:1"}, SizeBytes: 1 << 20}}
	nd.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.1"}}
	nd.Status.Conditions = []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"},
		{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: "FlannelIsUp", Message: "m"},
	}
	return nd
}

func protoEncode(t testing.TB, obj runtime.Object) []byte {
	t.Helper()
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	metav1.AddToGroupVersion(s, coreV1)
	var b bytes.Buffer
	if err := protobuf.NewSerializer(s, s).Encode(obj, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func wantNode(n *corev1.Node, keep annotationFilter) *apiNode {
	w := &apiNode{ObjectMeta: metav1.ObjectMeta{Name: n.Name, ResourceVersion: n.ResourceVersion, CreationTimestamp: metav1.NewTime(n.CreationTimestamp.Local())}}
	w.Annotations = n.Annotations
	w.keepAnnotations(keep)
	w.Spec.PodCIDR, w.Spec.PodCIDRs = n.Spec.PodCIDR, n.Spec.PodCIDRs
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			w.Status.Conditions = append(w.Status.Conditions, nodeCondition{Type: string(c.Type), Status: string(c.Status), Reason: c.Reason})
		}
	}
	return w
}

func decodeBytes(data []byte) (*apiNodeList, error) {
	codecs, _ := newCodecs()
	l := &apiNodeList{}
	meta, err := decodeNodeList(bufio.NewReader(bytes.NewReader(data)), codecs.UniversalDeserializer(), testAnn.leaseKeyFilter(),
		func(n *apiNode) { l.Items = append(l.Items, n) })
	l.ListMeta = meta
	return l, err
}

// A streamed node list keeps only what an apiNode holds; the JSON fallback makes the
// same peers.
func TestDecodeNodeList(t *testing.T) {
	m := &Manager{ann: testAnn}
	for _, n := range []int{0, 1, 3, 200} {
		list := testNodeList(n)
		jsonData, err := json.Marshal(list)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeBytes(protoEncode(t, list))
		if err != nil {
			t.Fatalf("%d nodes, protobuf: %v", n, err)
		}
		if got.ResourceVersion != "4711" || len(got.Items) != n {
			t.Fatalf("%d nodes, protobuf: resourceVersion %q, %d items", n, got.ResourceVersion, len(got.Items))
		}
		for i := range list.Items {
			want := wantNode(&list.Items[i], testAnn.leaseKeyFilter())
			if !reflect.DeepEqual(got.Items[i], want) {
				t.Fatalf("%d nodes, protobuf: item %d\n got %+v\nwant %+v", n, i, got.Items[i], want)
			}
		}
		fromJSON, err := decodeBytes(jsonData)
		if err != nil {
			t.Fatalf("%d nodes, json: %v", n, err)
		}
		if fromJSON.ResourceVersion != "4711" || len(fromJSON.Items) != n {
			t.Fatalf("%d nodes, json: resourceVersion %q, %d items", n, fromJSON.ResourceVersion, len(fromJSON.Items))
		}
		for i := range got.Items {
			if a, b := m.slim(got.Items[i]), m.slim(fromJSON.Items[i]); !reflect.DeepEqual(a, b) || len(fromJSON.Items[i].Annotations) != 4 {
				t.Fatalf("%d nodes: item %d from protobuf %+v, from json %+v (annotations %v)", n, i, a, b, fromJSON.Items[i].Annotations)
			}
		}
	}
}

// Whole objects (node, watched node, pod) decode into the slim types, all annotations kept.
func TestCodecsDecodeSlimTypes(t *testing.T) {
	codecs, _ := newCodecs()
	dec := codecs.UniversalDeserializer()
	n := testNode(3)
	for name, data := range map[string][]byte{"protobuf": protoEncode(t, n), "json": mustJSONBytes(t, n)} {
		obj, _, err := dec.Decode(data, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, ok := obj.(*apiNode)
		if !ok {
			t.Fatalf("%s: decoded a %T", name, obj)
		}
		want := wantNode(n, nil)
		if got.Name != want.Name || got.ResourceVersion != want.ResourceVersion || !got.CreationTimestamp.Equal(&want.CreationTimestamp) ||
			!reflect.DeepEqual(got.Annotations, want.Annotations) || !reflect.DeepEqual(got.Spec, want.Spec) {
			t.Errorf("%s: node\n got %+v\nwant %+v", name, got, want)
		}
		if reason, status := networkCondition(got); status != "False" || reason != "FlannelIsUp" {
			t.Errorf("%s: NetworkUnavailable %q %q", name, status, reason)
		}
		if c := got.DeepCopyObject().(*apiNode); !reflect.DeepEqual(c, got) {
			t.Errorf("%s: deep copy differs", name)
		}
	}
	p := &corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{NodeName: "node-7", Containers: []corev1.Container{{Name: "c"}}}}
	obj, _, err := dec.Decode(protoEncode(t, p), nil, nil)
	if pod, ok := obj.(*apiPod); err != nil || !ok || pod.Spec.NodeName != "node-7" {
		t.Fatalf("pod: %v %+v", err, obj)
	}
}

func mustJSONBytes(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeNodeListErrors(t *testing.T) {
	full := protoEncode(t, testNodeList(3))
	for _, cut := range []int{5, 10, len(full) / 2, len(full) - 1} {
		if _, err := decodeBytes(full[:cut]); err == nil || !strings.HasPrefix(err.Error(), "decode node list: ") {
			t.Errorf("truncated at %d of %d: %v, want a decode node list error", cut, len(full), err)
		}
	}
	for _, bad := range []string{"k8s\x00", "k8s\x00\x00", "k8s\x00\x0f", "k8s\x00\x12\x80", `{"items":[{"metadata":`} {
		if _, err := decodeBytes([]byte(bad)); err == nil || !strings.HasPrefix(err.Error(), "decode node list: ") || strings.Count(err.Error(), "decode node list") != 1 {
			t.Errorf("%q: %v, want one decode node list error", bad, err)
		}
	}
}

func FuzzDecodeNodeList(f *testing.F) {
	f.Add(protoEncode(f, testNodeList(2)))
	f.Add([]byte(`{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[{"metadata":{"name":"a"}}]}`))
	f.Add([]byte("k8s\x00\x12\x05\x12\x03\x0a\x01a"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := decodeBytes(data)
		if err != nil {
			return
		}
		m := &Manager{ann: testAnn}
		for _, p := range l.Items {
			if p == nil {
				t.Fatal("nil item")
			}
			for k, v := range p.Annotations {
				if len(v) > subnet.MaxValueSize {
					t.Fatalf("annotation %s of %d bytes kept", k, len(v))
				}
			}
			if s := m.slim(p); s.TooLarge && s.LeaseAnn[leaseKeyBackendData]+s.LeaseAnn[leaseKeyPublicIP] != "" {
				t.Fatalf("a too large lease kept its annotations: %+v", s)
			}
		}
	})
}

// An oversized lease annotation is dropped while decoding (protobuf and JSON) and the
// node's lease is too large.
func TestDecodeNodeListDropsLargeAnnotations(t *testing.T) {
	list := testNodeList(3)
	list.Items[1].Annotations[testAnn.BackendData] = `{"VNI":1,"VtepMAC":"0e:00:00:00:00:01","pad":"` + strings.Repeat("x", 100<<10) + `"}`
	jsonData, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	m := &Manager{ann: testAnn}
	for name, data := range map[string][]byte{"protobuf": protoEncode(t, list), "json": jsonData} {
		l, err := decodeBytes(data)
		if err != nil || len(l.Items) != 3 {
			t.Fatalf("%s: %v, %d items", name, err, len(l.Items))
		}
		for i, n := range l.Items {
			_, kept := n.Annotations[testAnn.BackendData]
			c := nodeCandidate(n, testAnn, &subnet.Config{EnableIPv4: true})
			tooLarge := c.Origin.Defect != nil && c.Origin.Defect.Reason == subnet.TooLarge
			if (i == 1) != (n.leaseTooLarge && !kept && tooLarge) || i != 1 && c.Origin.Defect != nil {
				t.Fatalf("%s: node %d: kept %v, marked %v, candidate %+v", name, i, kept, n.leaseTooLarge, c.Origin)
			}
			if s := m.slim(n); i == 1 && (!s.managed() || s.LeaseAnn[leaseKeyPublicIP] != "") {
				t.Fatalf("%s: the too large node's slim form %+v", name, s)
			}
		}
	}
}

// Any bytes handed to the slim types decode without a panic.
func FuzzUnmarshalNode(f *testing.F) {
	f.Add(protoEncode(f, testNode(1))[len(protobufMagic):])
	f.Fuzz(func(t *testing.T, data []byte) {
		var n apiNode
		_ = n.Unmarshal(data)
		var p apiPod
		_ = p.Unmarshal(data)
		var l apiNodeList
		_ = l.Unmarshal(data)
	})
}
