package kube

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/flannel-go/flannel/subnet"
)

// BenchmarkWatchLeasesMemory isolates what subnet/kube holds while WatchLeases reaches its
// first snapshot of 5,000 kubelet-sized nodes on a real kube-apiserver: time, peak heap
// (sampled every ms) and live heap per node after a GC. make bench-kube measures the
// whole daemon. E.g.
//
//	go test ./subnet/kube -run '^$' -bench WatchLeasesMemory -benchtime 3x
func BenchmarkWatchLeasesMemory(b *testing.B) {
	const nodes = 5000
	k := apiserver(b)
	rc := k.API.RESTConfig("")
	rc.QPS, rc.Burst = 2000, 4000
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	prefix := uniq(b, "n")
	if err := createBenchNodes(ctx, cs, prefix, nodes); err != nil {
		b.Fatal(err)
	}
	conf := writeNetConf(b, `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`)
	b.ResetTimer()
	var syncSum time.Duration
	var peakMax, liveMax uint64
	for b.Loop() {
		sync, peak, live := watchOnce(b, k.API.RESTConfig(""), prefix+"-00000", conf)
		syncSum += sync
		peakMax, liveMax = max(peakMax, peak), max(liveMax, live)
	}
	b.StopTimer()
	b.ReportMetric(float64(syncSum.Milliseconds())/float64(b.N), "ms/sync")
	b.ReportMetric(float64(peakMax)/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(liveMax)/nodes, "live-B/node")
}

// watchOnce runs a fresh manager to the first snapshot: time, peak heap, live heap growth.
func watchOnce(b *testing.B, rc *rest.Config, own, conf string) (time.Duration, uint64, uint64) {
	runtime.GC()
	base := heapBytes("/gc/heap/live:bytes")
	m, err := New(Config{REST: rc, NodeName: own, NetConfigPath: conf})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := m.GetNetworkConfig(ctx); err != nil {
		b.Fatal(err)
	}
	var (
		peak uint64
		wg   sync.WaitGroup
	)
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			peak = max(peak, heapBytes("/memory/classes/heap/objects:bytes"))
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	out := make(chan subnet.WatchResult, 1)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- m.WatchLeases(ctx, out) }()
	r := <-out
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	runtime.GC()
	live := heapBytes("/gc/heap/live:bytes")
	if len(r.Snapshot) < 5000-1 { // every node but the own one
		b.Fatalf("snapshot of %d leases", len(r.Snapshot))
	}
	runtime.KeepAlive(r)
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	return elapsed, peak, live - min(live, base)
}

func heapBytes(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// createBenchNodes creates n kubelet-shaped peer nodes <prefix>-00000...; existing ones stay.
func createBenchNodes(ctx context.Context, cs kubernetes.Interface, prefix string, n int) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			_, err := cs.CoreV1().Nodes().Create(ctx, benchNode(prefix, i), metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) { // -count > 1: created by the first run
				return nil
			}
			return err
		})
	}
	return g.Wait()
}

func benchNode(prefix string, i int) *corev1.Node {
	name := fmt.Sprintf("%s-%05d", prefix, i)
	cidr := fmt.Sprintf("10.%d.%d.0/24", 1+i/256, i%256)
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{
			"node.alpha.kubernetes.io/ttl":                 "0",
			"flannel.alpha.coreos.com/kube-subnet-manager": "true",
			"flannel.alpha.coreos.com/backend-type":        "vxlan",
			"flannel.alpha.coreos.com/backend-data":        fmt.Sprintf(`{"VNI":1,"VtepMAC":"0a:%02x:%02x:%02x:00:01"}`, (i>>16)&0xff, (i>>8)&0xff, i&0xff),
			"flannel.alpha.coreos.com/public-ip":           fmt.Sprintf("198.51.100.%d", 1+i%250),
		}, Labels: map[string]string{
			"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
			"node.kubernetes.io/instance-type": "bench", "topology.kubernetes.io/zone": "lab-a",
		}},
		Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
		Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{
			MachineID: fmt.Sprintf("%032x", i), SystemUUID: fmt.Sprintf("%032x", i+1), BootID: fmt.Sprintf("%032x", i+2),
			KernelVersion: "6.1.0-bench", OSImage: "Debian GNU/Linux 12 (bookworm)", ContainerRuntimeVersion: "containerd://1.7.0",
			OperatingSystem: "linux", Architecture: "amd64",
		}},
	}
	now := metav1.Now()
	for _, c := range []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure, corev1.NodeReady} {
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{
			Type: c, Status: corev1.ConditionFalse, Reason: "Kubelet" + string(c), LastHeartbeatTime: now, LastTransitionTime: now,
		})
	}
	for j := range 12 {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{
			Names:     []string{fmt.Sprintf("registry.example.com/team/app-%d@sha256:%064x", j, j), fmt.Sprintf("registry.example.com/team/app-%d:v1.%d", j, j)},
			SizeBytes: int64(1e7 * (j + 1)),
		})
	}
	return n
}
