package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

type flannelProc struct {
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{} // closed once the process has been reaped

	mu    sync.Mutex
	state *os.ProcessState
}

func (p *flannelProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *flannelProc) exitState() *os.ProcessState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// signalAndWait sends sig (unless already exited) and waits up to timeout.
func (p *flannelProc) signalAndWait(sig syscall.Signal, timeout time.Duration) error {
	if p.running() {
		if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("lab: signal %v to pid %d: %w", sig, p.cmd.Process.Pid, err)
		}
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("lab: pid %d still running %v after %v", p.cmd.Process.Pid, timeout, sig)
	}
}

func (p *flannelProc) kill() error { return p.signalAndWait(syscall.SIGKILL, 10*time.Second) }

// FlanneldArgs are the lab's arguments for flanneld on node i.
func (l *Lab) FlanneldArgs(i int) []string {
	return []string{
		"--etcd-endpoints=" + l.EtcdEndpoint(),
		"--etcd-prefix=" + l.opts.EtcdPrefix,
		"--iface=eth0",
		"--subnet-file=" + l.SubnetEnvPath(i),
		"--healthz-port=0",
		"-v=2",
	}
}

// FlanneldCommand is the full command line StartFlanneld runs for node i.
func (l *Lab) FlanneldCommand(i int, extraArgs ...string) []string {
	return l.flanneldCommand(i, l.opts.FlanneldBin, extraArgs...)
}

func (l *Lab) flanneldCommand(i int, bin string, extraArgs ...string) []string {
	cmd := []string{"ip", "netns", "exec", l.NodeNS(i)}
	if l.opts.OwnWireguardDir {
		cmd = append(cmd, withWireguardDir(l.WireguardDir(i))...)
	}
	cmd = append(cmd, bin)
	cmd = append(cmd, l.FlanneldArgs(i)...)
	return append(cmd, extraArgs...)
}

// withWireguardDir prefixes an "ip netns exec" command to bind-mount dir on /run/wireguard.
func withWireguardDir(dir string) []string {
	const script = `mkdir -p /run/wireguard "$0" && mount --bind "$0" /run/wireguard && exec "$@"`
	return []string{"sh", "-c", script, dir}
}

// WireguardDir is node i's /run/wireguard with Options.OwnWireguardDir.
func (l *Lab) WireguardDir(i int) string { return filepath.Join(l.NodeDir(i), "wireguard") }

// WG runs wg(8) in node i's namespace, with its WireguardDir, and returns the output.
func (l *Lab) WG(i int, args ...string) (string, error) {
	if !l.opts.OwnWireguardDir {
		return "", errors.New("lab: WG needs Options.OwnWireguardDir")
	}
	cmd := append(withWireguardDir(l.WireguardDir(i)), append([]string{"wg"}, args...)...)
	return nsExec(context.Background(), l.NodeNS(i), cmd...)
}

// SubnetEnvPath is node i's subnet file.
func (l *Lab) SubnetEnvPath(i int) string { return filepath.Join(l.NodeDir(i), "subnet.env") }

// LogPath is node i's flanneld log, all runs appended.
func (l *Lab) LogPath(i int) string { return filepath.Join(l.NodeDir(i), "flanneld.log") }

// StartFlanneld starts flanneld on node i with FlanneldArgs then extraArgs; it fails if
// one runs there. The process dies with this one and with Close.
func (l *Lab) StartFlanneld(i int, extraArgs ...string) error {
	return l.startFlanneld(i, l.opts.FlanneldBin, nil, extraArgs...)
}

// StartFlanneldBin is StartFlanneldEnv with another binary than Options.FlanneldBin.
func (l *Lab) StartFlanneldBin(i int, bin string, env []string, extraArgs ...string) error {
	return l.startFlanneld(i, bin, env, extraArgs...)
}

func (l *Lab) startFlanneld(i int, bin string, extraEnv []string, extraArgs ...string) error {
	n, err := l.node(i)
	if err != nil {
		return err
	}
	if bin == "" {
		return errors.New("lab: Options.FlanneldBin is not set")
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("lab: flanneld binary: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("lab: closed")
	}
	if n.proc != nil && n.proc.running() {
		return fmt.Errorf("lab: flanneld already running on node %d (pid %d)", i, n.proc.cmd.Process.Pid)
	}
	p, err := spawn(n.dir, l.LogPath(i), l.flanneldCommand(i, bin, extraArgs...), extraEnv)
	if err != nil {
		return fmt.Errorf("lab: node %d: %w", i, err)
	}
	n.proc = p
	l.logf("lab %s: flanneld started on node %d (pid %d)", l.opts.Name, i, p.cmd.Process.Pid)
	return nil
}

// spawn starts argv in dir, appending its output to logPath, and reaps it.
func spawn(dir, logPath string, argv, extraEnv []string) (*flannelProc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open flanneld log: %w", err)
	}
	fmt.Fprintf(logf, "===== lab: %s starting: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(flanneldEnv(), extraEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Pdeathsig: syscall.SIGKILL, // never outlive the test or demo process
		Setpgid:   true,            // Ctrl-C on the demo's terminal is the demo's to handle
	}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start flanneld: %w", err)
	}
	p := &flannelProc{cmd: cmd, started: started, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		fmt.Fprintf(logf, "===== lab: %s flanneld pid %d ended: %v\n", time.Now().Format(time.RFC3339Nano), cmd.Process.Pid, cmd.ProcessState)
		logf.Close()
		p.mu.Lock()
		p.state = cmd.ProcessState
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// flanneldEnv is this process's environment without variables that change flanneld.
func flanneldEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "FLANNELD_") || strings.HasPrefix(kv, "NOTIFY_SOCKET=") ||
			strings.HasPrefix(kv, "KUBERNETES_") || strings.HasPrefix(kv, "NODE_NAME=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (l *Lab) proc(i int) (*flannelProc, error) {
	n, err := l.node(i)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if n.proc == nil {
		return nil, fmt.Errorf("lab: flanneld was never started on node %d", i)
	}
	return n.proc, nil
}

// FlanneldRunning reports whether flanneld runs on node i.
func (l *Lab) FlanneldRunning(i int) bool {
	p, err := l.proc(i)
	return err == nil && p.running()
}

// FlanneldPID is the PID of node i's flanneld (current or last), 0 if never started.
func (l *Lab) FlanneldPID(i int) int {
	p, err := l.proc(i)
	if err != nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// StopFlanneld SIGTERMs node i's flanneld and waits 30 s; a kill or non-zero exit is an error.
func (l *Lab) StopFlanneld(i int) error {
	p, err := l.proc(i)
	if err != nil {
		return err
	}
	if err := p.signalAndWait(syscall.SIGTERM, 30*time.Second); err != nil {
		_ = p.kill()
		return fmt.Errorf("lab: node %d: flanneld did not stop on SIGTERM: %w\n%s", i, err, l.LogTail(i, 20))
	}
	if st := p.exitState(); st == nil || st.ExitCode() != 0 {
		return fmt.Errorf("lab: node %d: flanneld ended with %v after SIGTERM\n%s", i, st, l.LogTail(i, 20))
	}
	return nil
}

// KillFlanneld sends SIGKILL to node i's flanneld and waits for it.
func (l *Lab) KillFlanneld(i int) error {
	p, err := l.proc(i)
	if err != nil {
		return err
	}
	return p.kill()
}

// WaitExit waits up to timeout for node i's flanneld to end; -1 means a signal ended it.
func (l *Lab) WaitExit(i int, timeout time.Duration) (int, error) {
	p, err := l.proc(i)
	if err != nil {
		return 0, err
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		return 0, fmt.Errorf("lab: node %d: flanneld (pid %d) still running after %v", i, p.cmd.Process.Pid, timeout)
	}
	return p.exitState().ExitCode(), nil
}

// LogTail returns the last n lines of node i's flanneld log.
func (l *Lab) LogTail(i, n int) string { return TailFile(l.LogPath(i), n) }

// TailFile returns the last n lines of a text file (or the error in parentheses).
func TailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// SubnetEnv reads node i's subnet file into a map.
func (l *Lab) SubnetEnv(i int) (map[string]string, error) {
	data, err := os.ReadFile(l.SubnetEnvPath(i))
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	return ParseEnv(string(data)), nil
}

func hasSubnet(env map[string]string) bool {
	return env["FLANNEL_SUBNET"] != "" || env["FLANNEL_IPV6_SUBNET"] != ""
}

// ParseEnv parses KEY=value lines (no quoting, as flanneld writes them).
func ParseEnv(text string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && k != "" {
			m[k] = v
		}
	}
	return m
}

// WaitSubnetEnv waits until node i's flanneld, since its last start, wrote a subnet file
// with a subnet and FLANNEL_MTU; it fails early when flanneld exits.
func (l *Lab) WaitSubnetEnv(i int, timeout time.Duration) (map[string]string, error) {
	p, err := l.proc(i)
	if err != nil {
		return nil, err
	}
	return waitSubnetEnv(p, fmt.Sprintf("node %d", i), l.SubnetEnvPath(i), l.LogPath(i), timeout)
}

func waitSubnetEnv(p *flannelProc, what, path, logPath string, timeout time.Duration) (map[string]string, error) {
	read := func() (map[string]string, error) {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return ParseEnv(string(data)), nil
	}
	// File times come from the kernel's coarse clock, which may lag time.Now.
	since := p.started.Add(-20 * time.Millisecond)
	deadline := time.Now().Add(timeout)
	for {
		if st, err := os.Stat(path); err == nil && st.ModTime().After(since) {
			env, err := read()
			if err == nil && hasSubnet(env) && env["FLANNEL_MTU"] != "" {
				return env, nil
			}
		}
		if !p.running() {
			if env, err := read(); err == nil && hasSubnet(env) {
				if st, err := os.Stat(path); err == nil && st.ModTime().After(since) {
					return env, nil
				}
			}
			return nil, fmt.Errorf("lab: %s: flanneld exited (%v) before writing %s; log tail:\n%s",
				what, p.exitState(), path, TailFile(logPath, 30))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("lab: %s: no fresh %s after %v; log tail:\n%s",
				what, path, timeout, TailFile(logPath, 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
