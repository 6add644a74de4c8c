// Package benchkit is what the benchmark commands (e2e/cmd/bench*) share: start-up, the
// daemons, process figures and the JSON report e2e/cmd/benchplot reads.
package benchkit

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Main runs run with a context SIGINT/SIGTERM cancel, refusing non-root (suggesting make
// target), and exits 1 on error.
func Main(name, target string, run func(ctx context.Context) error) {
	if os.Geteuid() != 0 {
		fmt.Fprintf(os.Stderr, "%s: needs root (network namespaces); run: sudo make %s\n", name, target)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Flanneld returns bin's absolute path or, when bin is empty, builds one into dir.
func Flanneld(ctx context.Context, bin, dir string) (string, error) {
	if bin != "" {
		return filepath.Abs(bin)
	}
	bin = filepath.Join(dir, "flanneld")
	version := "dev"
	if out, err := exec.CommandContext(ctx, "git", "describe", "--tags", "--always", "--dirty").Output(); err == nil {
		version = strings.TrimSpace(string(out))
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X main.version="+version, "-o", bin, "./cmd/flanneld")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as make build and the image
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/flanneld: %v\n%s", err, out)
	}
	return bin, nil
}

// Machine describes CPUs, memory, kernel and Go version in one line.
func Machine() string {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	meminfo, _ := os.ReadFile("/proc/meminfo")
	return machine(runtime.NumCPU(), string(cpuinfo), string(meminfo), strings.TrimSpace(string(kernel)), runtime.Version())
}

func machine(cpus int, cpuinfo, meminfo, kernel, goVersion string) string {
	s := fmt.Sprintf("%d CPUs", cpus)
	for _, line := range strings.Split(cpuinfo, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			s += " (" + strings.Join(strings.Fields(v), " ") + ")"
			break
		}
	}
	for _, line := range strings.Split(meminfo, "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			if kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB"))); err == nil {
				s += fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
			}
		}
	}
	return s + ", Linux " + kernel + ", " + goVersion
}

// Median is the upper-middle value of non-empty xs, left unchanged.
func Median[T cmp.Ordered](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// TicksPerSecond is the kernel's USER_HZ, the unit of CPUTicks.
const TicksPerSecond = 100

// CPUTicks is a process's CPU time in ticks, with the children it waited for.
func CPUTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseCPUTicks(string(b))
}

// parseCPUTicks sums fields 14-17 of a stat line, counted after the last ')' (comm may hold any).
func parseCPUTicks(stat string) (int64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc stat line %q", stat)
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, fmt.Errorf("short /proc stat line %q", stat)
	}
	var sum int64
	for _, k := range []int{11, 12, 13, 14} {
		v, err := strconv.ParseInt(f[k], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc stat field %d: %w", k+3, err)
		}
		sum += v
	}
	return sum, nil
}

// StatusKB reads one kB field of /proc/<pid>/status.
func StatusKB(pid int, field string) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", field, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}
