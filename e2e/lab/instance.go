package lab

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"syscall"
	"time"
)

// Instance is a further flanneld on a node for another etcd prefix, with its own subnet
// file and log; Close stops every Instance.
type Instance struct {
	l      *Lab
	node   int
	name   string
	prefix string
	proc   *flannelProc // guarded by l.mu
}

var instanceNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)

// Instance makes, without starting, instance name on node i for etcd prefix.
func (l *Lab) Instance(i int, name, prefix string) (*Instance, error) {
	if _, err := l.node(i); err != nil {
		return nil, err
	}
	if !instanceNameRE.MatchString(name) {
		return nil, fmt.Errorf("lab: invalid instance name %q", name)
	}
	return &Instance{l: l, node: i, name: name, prefix: prefix}, nil
}

// String names the instance in messages ("vxlan-b on node 2").
func (in *Instance) String() string { return fmt.Sprintf("%s on node %d", in.name, in.node) }

// Node is the instance's node.
func (in *Instance) Node() int { return in.node }

// Prefix is its etcd prefix.
func (in *Instance) Prefix() string { return in.prefix }

// SubnetEnvPath is its subnet file.
func (in *Instance) SubnetEnvPath() string {
	return filepath.Join(in.l.NodeDir(in.node), in.name+".env")
}

// LogPath is its log (all runs appended).
func (in *Instance) LogPath() string { return filepath.Join(in.l.NodeDir(in.node), in.name+".log") }

// Command is FlanneldCommand with its own prefix and subnet file, then extraArgs.
func (in *Instance) Command(extraArgs ...string) []string {
	args := append([]string{"--etcd-prefix=" + in.prefix, "--subnet-file=" + in.SubnetEnvPath()}, extraArgs...)
	return in.l.FlanneldCommand(in.node, args...)
}

// PutConfig writes its network's configuration to <prefix>/config.
func (in *Instance) PutConfig(ctx context.Context, config string) error {
	cli := in.l.Etcd()
	if cli == nil {
		return errors.New("lab: no etcd")
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, in.prefix+"/config", config); err != nil {
		return fmt.Errorf("lab: put config of %s: %w", in.prefix, err)
	}
	return nil
}

// Start starts it (Command(extraArgs...)); it fails if it runs already.
func (in *Instance) Start(extraArgs ...string) error {
	l := in.l
	if l.opts.FlanneldBin == "" {
		return errors.New("lab: Options.FlanneldBin is not set")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("lab: closed")
	}
	if in.proc != nil && in.proc.running() {
		return fmt.Errorf("lab: %s runs already (pid %d)", in, in.proc.cmd.Process.Pid)
	}
	p, err := spawn(l.NodeDir(in.node), in.LogPath(), in.Command(extraArgs...), nil)
	if err != nil {
		return fmt.Errorf("lab: %s: %w", in, err)
	}
	in.proc = p
	l.extra = append(l.extra, p)
	l.logf("lab %s: flanneld %s started (pid %d)", l.opts.Name, in, p.cmd.Process.Pid)
	return nil
}

func (in *Instance) current() (*flannelProc, error) {
	in.l.mu.Lock()
	defer in.l.mu.Unlock()
	if in.proc == nil {
		return nil, fmt.Errorf("lab: %s was never started", in)
	}
	return in.proc, nil
}

// Running reports whether it runs.
func (in *Instance) Running() bool {
	p, err := in.current()
	return err == nil && p.running()
}

// PID is its process ID (current or last run), 0 if never started.
func (in *Instance) PID() int {
	p, err := in.current()
	if err != nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// WaitSubnetEnv is Lab.WaitSubnetEnv for the instance.
func (in *Instance) WaitSubnetEnv(timeout time.Duration) (map[string]string, error) {
	p, err := in.current()
	if err != nil {
		return nil, err
	}
	return waitSubnetEnv(p, in.String(), in.SubnetEnvPath(), in.LogPath(), timeout)
}

// WaitExit waits up to timeout for it to end; -1 means a signal ended it.
func (in *Instance) WaitExit(timeout time.Duration) (int, error) {
	p, err := in.current()
	if err != nil {
		return 0, err
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		return 0, fmt.Errorf("lab: %s (pid %d) still running after %v", in, p.cmd.Process.Pid, timeout)
	}
	return p.exitState().ExitCode(), nil
}

// Stop sends SIGTERM and waits up to 30 s; an exit status other than 0 is an error.
func (in *Instance) Stop() error {
	p, err := in.current()
	if err != nil {
		return err
	}
	if err := p.signalAndWait(syscall.SIGTERM, 30*time.Second); err != nil {
		_ = p.kill()
		return fmt.Errorf("lab: %s did not stop on SIGTERM: %w\n%s", in, err, TailFile(in.LogPath(), 20))
	}
	if st := p.exitState(); st == nil || st.ExitCode() != 0 {
		return fmt.Errorf("lab: %s ended with %v after SIGTERM\n%s", in, st, TailFile(in.LogPath(), 20))
	}
	return nil
}
