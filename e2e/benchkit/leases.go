package benchkit

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flannel-go/flannel/subnet"
)

// PeerSubnet is synthetic peer i's subnet: 10.<1+i/256>.<i%256>.0/24, never 10.0.x.
func PeerSubnet(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + i/256), byte(i % 256), 0}), 24)
}

// WriteLeases puts synthetic vxlan peer leases [from, to) on etcd lease id; their public
// addresses go nowhere in the lab.
func WriteLeases(ctx context.Context, cli *clientv3.Client, prefix string, from, to int, id clientv3.LeaseID) error {
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := cli.Txn(ctx).Then(ops...).Commit()
		ops = ops[:0]
		return err
	}
	for i := from; i < to; i++ {
		sn := PeerSubnet(i)
		mac := fmt.Sprintf("0a:%02x:%02x:%02x:00:01", (i>>16)&0xff, (i>>8)&0xff, i&0xff)
		attrs := subnet.LeaseAttrs{
			PublicIP:    netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i%250)}),
			BackendType: "vxlan",
			BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`),
		}
		val, err := json.Marshal(attrs)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(prefix+"/subnets/"+subnet.MakeSubnetKey(sn, netip.Prefix{}), string(val), clientv3.WithLease(id)))
		if len(ops) == 100 {
			if err := flush(); err != nil {
				return fmt.Errorf("put leases: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		return fmt.Errorf("put leases: %w", err)
	}
	return nil
}
