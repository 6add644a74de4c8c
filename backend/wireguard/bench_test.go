package wireguard

import (
	"fmt"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// BenchmarkPollUserspace is what Watch costs at rest per device and poll with n peers on
// a userspace device: reading the device (the configuration protocol's get) and
// comparing the text with the desired state (uapiDrifted).
func BenchmarkPollUserspace(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			dev := newTestDevice(b)
			psk := mustKey(testPSK)
			s := wgSettings{key: testPriv, psk: &psk}
			w := &devWant{name: "flannel-wg", port: 51820}
			for i := range n {
				k, _ := wgtypes.GeneratePrivateKey()
				w.peers = append(w.peers, peerWant{key: k.PublicKey(),
					endpoint: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, byte(2 + i/250), byte(1 + i%250)}), 51820),
					allowed:  []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i / 256), byte(i % 256), 0}), 24)}})
			}
			w.peers = sortPeers(w.peers)
			cfg, _ := diffDevice(w, s, &wgtypes.Device{}, nil)
			if err := dev.IpcSet(uapiSet(cfg)); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				text, err := dev.IpcGet()
				if err != nil {
					b.Fatal(err)
				}
				if uapiDrifted(text, w, s) {
					b.Fatal("drifted")
				}
			}
		})
	}
}
