package kube

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/subnet"
)

var _ subnet.ConfigWatcher = (*Manager)(nil)

// netConfigPoll is how often WatchConfig reads the net-conf file again. kubelet itself
// takes up to about a minute to bring a changed ConfigMap into a mounted volume.
const netConfigPoll = 10 * time.Second

// WatchConfig implements subnet.ConfigWatcher for --net-config-path: the file is read
// at once and then every 10 s, and changed gets its text ("" when the file is gone;
// other read errors are logged at verbosity 2 and skipped). The daemon uses the config
// read at start until it restarts, as upstream does; this only lets it say that the
// file changed.
func (m *Manager) WatchConfig(ctx context.Context, changed func(text string)) error {
	watchFile(ctx, m.cfg.NetConfigPath, netConfigPoll, changed)
	return nil
}

// watchFile reads path now and every period until ctx ends, calling changed with its
// text each time.
func watchFile(ctx context.Context, path string, period time.Duration, changed func(string)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		data, err := os.ReadFile(path)
		switch {
		case err == nil:
			changed(string(data))
		case errors.Is(err, fs.ErrNotExist):
			changed("")
		default:
			klog.V(2).InfoS("Cannot read the network config file to follow it", "path", path, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
