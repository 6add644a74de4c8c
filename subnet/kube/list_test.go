package kube

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
)

func testNodeList(n int) *corev1.NodeList {
	l := &corev1.NodeList{TypeMeta: metav1.TypeMeta{Kind: "NodeList", APIVersion: "v1"}, ListMeta: metav1.ListMeta{ResourceVersion: "4711"}}
	for i := range n {
		cidrs := []string{fmt.Sprintf("10.244.%d.0/24", i)}
		if i%2 == 1 { // dual stack: spec.podCIDRs set as well
			cidrs = append(cidrs, fmt.Sprintf("fd00:%x::/64", i))
		}
		nd := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("n%d", i), Annotations: peerAnn(fmt.Sprintf("192.0.2.%d", 10+i), "0e:00:00:00:00:01")}}
		nd.Spec.PodCIDR = cidrs[0]
		if len(cidrs) > 1 {
			nd.Spec.PodCIDRs = cidrs
		}
		nd.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate}}
		nd.Spec.Taints = []corev1.Taint{{Key: "k", Effect: corev1.TaintEffectNoSchedule}}
		nd.ResourceVersion = fmt.Sprint(100 + i)
		nd.Labels = map[string]string{"kubernetes.io/os": "linux"}
		nd.Status.Images = []corev1.ContainerImage{{Names: []string{"registry.example.com/a:1"}, SizeBytes: 1 << 20}}
		l.Items = append(l.Items, *nd)
	}
	return l
}

func protoEncode(t testing.TB, obj runtime.Object) []byte {
	t.Helper()
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := protobuf.NewSerializer(s, s).Encode(obj, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// fromCoreV1 converts a client-go Node to the local type through its JSON, as the API
// server would send it (this also checks the local type's JSON names).
func fromCoreV1(t testing.TB, n *corev1.Node) *apiNode {
	t.Helper()
	data, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	var out apiNode
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func decodeBytes(data []byte) (*peerNodeList, error) {
	return decodeNodeList(bufio.NewReader(bytes.NewReader(data)), testAnn)
}

func TestDecodeNodeList(t *testing.T) {
	m := &Manager{ann: testAnn}
	for _, n := range []int{0, 1, 3, 200} {
		list := testNodeList(n)
		var want []*peerNode
		for i := range list.Items {
			want = append(want, m.slim(fromCoreV1(t, &list.Items[i])))
		}
		jsonData, err := json.Marshal(list)
		if err != nil {
			t.Fatal(err)
		}
		for name, data := range map[string][]byte{"protobuf": protoEncode(t, list), "json": jsonData} {
			got, err := decodeBytes(data)
			if err != nil {
				t.Fatalf("%d nodes, %s: %v", n, name, err)
			}
			if got.ResourceVersion != "4711" {
				t.Errorf("%d nodes, %s: resourceVersion %q", n, name, got.ResourceVersion)
			}
			if len(got.Items) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got.Items, want)) {
				t.Errorf("%d nodes, %s: items differ:\n got %+v\nwant %+v", n, name, got.Items, want)
			}
		}
	}
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
	f.Add([]byte(`{"metadata":{"resourceVersion":"1"},"items":[{"metadata":{"name":"a"}}]}`))
	f.Add([]byte("k8s\x00\x12\x05\x12\x03\x0a\x01a"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := decodeBytes(data)
		if err != nil {
			return
		}
		for _, p := range l.Items {
			if p == nil {
				t.Fatal("nil item")
			}
		}
	})
}
