package benchkit

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Daemon is a flanneld binary a benchmark runs: ours or upstream's.
type Daemon struct {
	Name    string // Ours or Upstream
	Bin     string // absolute path
	Version string // its --version
}

func (d Daemon) IsUpstream() bool { return d.Name == Upstream }

// UpstreamBuildScript builds upstream flanneld once per version and prints its path.
const UpstreamBuildScript = "tools/flanneld-upstream/build.sh"

// UpstreamVersion is built unless $FLANNEL_UPSTREAM_VERSION says otherwise.
const UpstreamVersion = "v0.28.10"

// UpstreamBinary returns $FLANNEL_TEST_UPSTREAM_FLANNELD, else the cached build's path.
func UpstreamBinary() (string, error) {
	if b := os.Getenv("FLANNEL_TEST_UPSTREAM_FLANNELD"); b != "" {
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("FLANNEL_TEST_UPSTREAM_FLANNELD: %w", err)
		}
		return b, nil
	}
	cache := os.Getenv("FLANNEL_GO_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("upstream flanneld: no home directory: %w", err)
		}
		cache = filepath.Join(home, ".cache", "flannel-go")
	}
	version := os.Getenv("FLANNEL_UPSTREAM_VERSION")
	if version == "" {
		version = UpstreamVersion
	}
	b := filepath.Join(cache, "flanneld-upstream-"+version)
	if _, err := os.Stat(b); err != nil {
		return "", fmt.Errorf("upstream flanneld %s not built (run `make flanneld-upstream`, or set FLANNEL_TEST_UPSTREAM_FLANNELD): %w", version, err)
	}
	return b, nil
}

// Daemons resolves -flanneld and -upstream into the daemons, ours first; upstream is "",
// "build" or a binary.
func Daemons(ctx context.Context, ours, upstream, dir string) ([]Daemon, error) {
	bin, err := Flanneld(ctx, ours, dir)
	if err != nil {
		return nil, err
	}
	ds := []Daemon{{Name: Ours, Bin: bin}}
	switch upstream {
	case "":
	case "build":
		cmd := exec.CommandContext(ctx, UpstreamBuildScript)
		cmd.Stderr = os.Stderr // the first build takes a minute and says so
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", UpstreamBuildScript, err)
		}
		ds = append(ds, Daemon{Name: Upstream, Bin: strings.TrimSpace(string(out))})
	default:
		abs, err := filepath.Abs(upstream)
		if err != nil {
			return nil, err
		}
		ds = append(ds, Daemon{Name: Upstream, Bin: abs})
	}
	for i := range ds {
		if ds[i].Version, err = Version(ctx, ds[i].Bin); err != nil {
			return nil, err
		}
	}
	if len(ds) > 1 {
		if err := BrNetfilter(); err != nil {
			return nil, err
		}
	}
	return ds, nil
}

const brNetfilterSysctl = "/proc/sys/net/bridge/bridge-nf-call-iptables"

// BrNetfilter loads br_netfilter, which upstream's flanneld requires, unless loaded.
func BrNetfilter() error {
	if _, err := os.Stat(brNetfilterSysctl); err == nil {
		return nil
	}
	if out, err := exec.Command("modprobe", "br_netfilter").CombinedOutput(); err != nil {
		return fmt.Errorf("upstream flanneld needs %s: modprobe br_netfilter: %w %s", brNetfilterSysctl, err, out)
	}
	if _, err := os.Stat(brNetfilterSysctl); err != nil {
		return fmt.Errorf("upstream flanneld needs %s (br_netfilter loaded): %w", brNetfilterSysctl, err)
	}
	return nil
}

// SetDaemons records the daemons' versions in the report.
func (r *Report) SetDaemons(ds []Daemon) {
	for _, d := range ds {
		r.Daemons[d.Name] = d.Version
	}
}

// Version returns the first line bin --version prints.
func Version(ctx context.Context, bin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if err != nil || line == "" {
		return "", fmt.Errorf("%s --version: %v %s", bin, err, out)
	}
	return line, nil
}

// Flags are the flags every benchmark command takes.
type Flags struct {
	Flanneld, Upstream, JSON string
}

// Define defines -flanneld, -upstream and -json; how says how upstream runs beside ours.
func (f *Flags) Define(how string) {
	flag.StringVar(&f.Flanneld, "flanneld", "", "flanneld binary (default: go build ./cmd/flanneld)")
	flag.StringVar(&f.Upstream, "upstream", "", "upstream flanneld to measure too, "+how+`: a binary, or "build" (`+UpstreamBuildScript+`); "" measures ours alone`)
	flag.StringVar(&f.JSON, "json", "", "write the results to this file (JSON, for e2e/cmd/benchplot)")
}

// Daemons resolves -flanneld and -upstream (see Daemons), building into dir.
func (f Flags) Daemons(ctx context.Context, dir string) ([]Daemon, error) {
	return Daemons(ctx, f.Flanneld, f.Upstream, dir)
}

// Finish prints the report's table to w and, with -json, writes the report.
func (f Flags) Finish(w io.Writer, r *Report) error {
	fmt.Fprintln(w)
	r.PrintTable(w)
	if f.JSON == "" {
		return nil
	}
	return r.Write(f.JSON)
}
