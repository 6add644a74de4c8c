// Command benchdiagnose times `flanneld diagnose --peers=all` with N synthetic peers whose
// addresses go nowhere, so every probe waits out its timeout.
//
//	sudo make bench-diagnose   # or: sudo go run ./e2e/cmd/benchdiagnose -peers 1000 -runs 5
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/flannel-go/flannel/diagnose"
	"github.com/flannel-go/flannel/e2e/benchkit"
	"github.com/flannel-go/flannel/e2e/lab"
)

const (
	family = "fgbdiag"
	config = `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`
	target = 3 * time.Second
)

type options struct {
	flanneld, json string
	peers, runs    int
}

func main() {
	var o options
	flag.StringVar(&o.flanneld, "flanneld", "", "flanneld binary (default: go build ./cmd/flanneld)")
	flag.StringVar(&o.json, "json", "", "write the results to this file (JSON)")
	flag.IntVar(&o.peers, "peers", 1000, "synthetic peers")
	flag.IntVar(&o.runs, "runs", 5, "diagnose runs (the median is reported)")
	flag.Parse()
	benchkit.Main("benchdiagnose", "bench-diagnose", func(ctx context.Context) error { return run(ctx, o) })
}

func run(ctx context.Context, o options) error {
	if o.runs < 1 || o.peers < 1 || o.peers > 60000 {
		return errors.New("-runs must be at least 1 and -peers 1..60000")
	}
	work, err := os.MkdirTemp("", "fgbdiag-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin, err := benchkit.Flanneld(ctx, o.flanneld, work)
	if err != nil {
		return err
	}
	_ = lab.Sweep(family)
	l, err := lab.New(ctx, lab.Options{Name: lab.UniqueName(family, "b"), Nodes: 1, WorkDir: filepath.Join(work, "lab"), FlanneldBin: bin})
	if err != nil {
		return err
	}
	defer l.Close()
	if err := l.PutConfig(ctx, config); err != nil {
		return err
	}
	grant, err := l.Etcd().Grant(ctx, 3600)
	if err != nil {
		return err
	}
	if err := benchkit.WriteLeases(ctx, l.Etcd(), l.EtcdPrefix(), 0, o.peers, grant.ID); err != nil {
		return err
	}
	if err := l.StartFlanneld(1); err != nil {
		return err
	}
	if _, err := l.WaitSubnetEnv(1, time.Minute); err != nil {
		return err
	}
	if err := waitRoutes(ctx, l, o.peers); err != nil {
		return err
	}

	rep := benchkit.NewReport("diagnose", "flanneld diagnose --peers=all, every probe timing out", "go run ./e2e/cmd/benchdiagnose")
	if v, err := benchkit.Version(ctx, bin); err == nil {
		rep.Daemons[benchkit.Ours] = v
	}
	res := benchkit.Result{Case: fmt.Sprintf("%d peers, every probe timing out", o.peers), X: float64(o.peers),
		Metric: "diagnose wall time", Unit: "s", Daemon: benchkit.Ours, Target: target.Seconds()}
	fmt.Printf("flanneld diagnose --peers=all with %d peers whose probes all time out (1 s each); %s\n", o.peers, rep.Machine)
	argv := append([]string{"ip", "netns", "exec", l.NodeNS(1), bin, "diagnose"}, l.FlanneldArgs(1)...)
	argv = append(argv, "--peers=all", "--output=json", "--cni-conf-dir="+filepath.Join(work, "no-cni"))
	for r := 0; r < o.runs; r++ {
		start := time.Now()
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
		took := time.Since(start)
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			return fmt.Errorf("diagnose: %w", err)
		}
		if err := probesTimedOut(out, o.peers); err != nil {
			return err
		}
		res.Runs = append(res.Runs, took.Seconds())
		fmt.Fprintf(os.Stderr, "benchdiagnose: run %d: %.2f s\n", r+1, took.Seconds())
	}
	rep.Add(res)
	rep.Note("probe timeout 1 s (the default); the daemon has programmed every peer before the runs")
	fmt.Println()
	rep.PrintTable(os.Stdout)
	if o.json != "" {
		return rep.Write(o.json)
	}
	return nil
}

func waitRoutes(ctx context.Context, l *lab.Lab, n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := l.Exec(l.NodeNS(1), "ip", "route", "show", "dev", "flannel.1")
		if err == nil && strings.Count(out, "\n")+1 >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("flannel.1 has not got %d routes after 2 minutes", n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// probesTimedOut checks that every peer was probed and none answered: the measured case.
func probesTimedOut(out []byte, peers int) error {
	var r diagnose.Report
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("diagnose printed no report: %w\n%s", err, out)
	}
	for _, c := range r.Checks {
		if c.Name == diagnose.CheckPeerUnderlay {
			if c.Outcome != diagnose.Failed || len(c.Objects) != peers {
				return fmt.Errorf("want all %d peers unanswered, got %s: %s (%d named)", peers, c.Outcome, c.Evidence, len(c.Objects))
			}
			return nil
		}
	}
	return errors.New("the report has no peer-underlay check")
}
