package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/pflag"
)

// The subcommands: they read what the daemon reads, with the daemon's flags.
const (
	cmdDiagnose = "diagnose"
	cmdLeases   = "leases"
)

var toolSummary = map[string]string{
	cmdDiagnose: "Checks, changing nothing, why pods on this node may not reach others: the daemon, the datastore,\n" +
		"the lease, the kernel, the pod bridge and CNI config, and a sample of peers. Give it the daemon's\n" +
		"flags (or FLANNELD_* variables). Exit status: 0 all passed or skipped, 1 a check failed, 2 bad usage.",
	cmdLeases: "Lists the leases of the network, decoded, with this node's marked and each peer admitted or\n" +
		"rejected by the daemon's rule. Give it the daemon's flags (or FLANNELD_* variables).",
}

// toolFlag annotates the flags of a subcommand, which FLANNELD_* variables do not set.
const toolFlag = "flannel-go/tool-flag"

// toolOptions are a subcommand's own settings.
type toolOptions struct {
	JSON bool // --output=json
	// Peers is how many peers the probes sample (0: all); CNIConfDir is --cni-conf-dir.
	Peers      int
	CNIConfDir string
	// ProbeTimeout bounds each ICMP probe, DatastoreTimeout each datastore call.
	ProbeTimeout, DatastoreTimeout time.Duration
	// EtcdEndpointsGiven says --etcd-endpoints (or its variable) was set.
	EtcdEndpointsGiven bool
}

type rawToolOptions struct {
	output, peers, cniConfDir      string
	probeTimeout, datastoreTimeout time.Duration
}

func defineToolFlags(fs *pflag.FlagSet, cmd string, r *rawToolOptions) {
	mark := func(name string) { _ = fs.SetAnnotation(name, toolFlag, []string{cmd}) }
	fs.StringVar(&r.output, "output", "text", "report format: text or json")
	mark("output")
	fs.DurationVar(&r.datastoreTimeout, "datastore-timeout", 5*time.Second, "bound of each datastore and control-socket call")
	mark("datastore-timeout")
	if cmd != cmdDiagnose {
		return
	}
	fs.StringVar(&r.peers, "peers", "16", "how many peers to probe, chosen at random, or all")
	mark("peers")
	fs.StringVar(&r.cniConfDir, "cni-conf-dir", "/etc/cni/net.d", "directory the container runtime reads CNI configs from")
	mark("cni-conf-dir")
	fs.DurationVar(&r.probeTimeout, "probe-timeout", time.Second, "how long each ICMP probe waits for its reply")
	mark("probe-timeout")
}

func finishTool(cmd string, r *rawToolOptions) (toolOptions, error) {
	t := toolOptions{CNIConfDir: r.cniConfDir, ProbeTimeout: r.probeTimeout, DatastoreTimeout: r.datastoreTimeout}
	switch r.output {
	case "text":
	case "json":
		t.JSON = true
	default:
		return t, fmt.Errorf("invalid --output %q: text or json", r.output)
	}
	switch r.peers {
	case "", "all":
	default:
		n, err := strconv.Atoi(r.peers)
		if err != nil || n < 1 {
			return t, fmt.Errorf("invalid --peers %q: a number of peers (1 or more) or all", r.peers)
		}
		t.Peers = n
	}
	if r.datastoreTimeout <= 0 || cmd == cmdDiagnose && r.probeTimeout <= 0 {
		return t, fmt.Errorf("invalid timeout: --probe-timeout and --datastore-timeout must be positive")
	}
	return t, nil
}
