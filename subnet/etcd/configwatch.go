package etcd

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/subnet"
)

var _ subnet.ConfigWatcher = (*Manager)(nil)

// WatchConfig implements subnet.ConfigWatcher for <prefix>/config: a broken watch reopens after
// a fresh read (backoff 100 ms to 10 s), missing nothing; it fails only if the manager is closed.
func (m *Manager) WatchConfig(ctx context.Context, changed func(text string)) error {
	delay := retryDelay{min: 100 * time.Millisecond, max: 10 * time.Second}
	for ctx.Err() == nil {
		err := m.watchConfigOnce(ctx, changed, &delay)
		if errors.Is(err, errClosed) {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		d := delay.next()
		klog.V(2).InfoS("Network config watch ended; reading it again", "key", m.configKey, "err", err, "after", d)
		sleepCtx(ctx, d)
	}
	return nil
}

func (m *Manager) watchConfigOnce(ctx context.Context, changed func(string), delay *retryDelay) error {
	cli, err := m.client()
	if err != nil {
		return err
	}
	gctx, cancel := context.WithTimeout(ctx, opTimeout)
	resp, err := cli.Get(gctx, m.configKey)
	cancel()
	if err != nil {
		return err
	}
	text := ""
	if len(resp.Kvs) > 0 {
		text = string(resp.Kvs[0].Value)
	}
	changed(text)
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wcancel()
	for wr := range cli.Watch(wctx, m.configKey, clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		delay.reset()
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				changed("")
			} else {
				changed(string(ev.Kv.Value))
			}
		}
	}
	return errors.New("watch channel closed")
}
