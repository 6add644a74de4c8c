// Package etcdproc runs a real etcd process for tests and the lab, optionally in a
// network namespace, with Kill, Stop and Restart for fault tests.
package etcdproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Binary returns $FLANNEL_TEST_ETCD, else etcd from PATH.
func Binary() (string, error) {
	if b := os.Getenv("FLANNEL_TEST_ETCD"); b != "" {
		return b, nil
	}
	b, err := exec.LookPath("etcd")
	if err != nil {
		return "", fmt.Errorf("etcd server binary not found (apt-get install etcd-server, or set FLANNEL_TEST_ETCD): %w", err)
	}
	return b, nil
}

// Options describe one etcd member (alone by default, or of InitialCluster).
type Options struct {
	Name           string     // member name (default "default")
	DataDir        string     // required: data directory (kept across Restart)
	ClientURL      string     // required, e.g. http://127.0.0.1:23790 or http://192.0.2.254:2379
	PeerURL        string     // required, e.g. http://127.0.0.1:23800
	Netns          string     // run inside this named network namespace (ip netns exec) when set
	LogFile        string     // etcd's output goes here (default DataDir + ".log")
	InitialCluster string     // default: this member alone
	TLS            *ServerTLS // serve the client URL with TLS
	ExtraArgs      []string
	ReadyTimeout   time.Duration // for the client port (default 20s)
}

// ServerTLS is etcd's client-URL certificate and the CA it demands of clients, if any.
type ServerTLS struct {
	CertFile, KeyFile string
	ClientCAFile      string
}

func (t *ServerTLS) args() []string {
	if t == nil {
		return nil
	}
	a := []string{"--cert-file", t.CertFile, "--key-file", t.KeyFile}
	if t.ClientCAFile != "" {
		a = append(a, "--trusted-ca-file", t.ClientCAFile, "--client-cert-auth")
	}
	return a
}

// Proc is a running (or stopped) etcd process.
type Proc struct {
	opts Options
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start launches etcd and waits until its client port accepts connections.
func Start(ctx context.Context, opts Options) (*Proc, error) {
	if opts.DataDir == "" || opts.ClientURL == "" || opts.PeerURL == "" {
		return nil, errors.New("etcdproc: DataDir, ClientURL and PeerURL are required")
	}
	if u, err := url.Parse(opts.ClientURL); err != nil || (u.Scheme == "https") != (opts.TLS != nil) {
		return nil, fmt.Errorf("etcdproc: client URL %q: https:// exactly when TLS is set", opts.ClientURL)
	}
	if opts.Name == "" {
		opts.Name = "default"
	}
	if opts.LogFile == "" {
		opts.LogFile = filepath.Clean(opts.DataDir) + ".log"
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 20 * time.Second
	}
	p := &Proc{opts: opts}
	if err := p.start(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// Endpoint is the client URL.
func (p *Proc) Endpoint() string { return p.opts.ClientURL }

// PID is the process id of the running etcd (0 when stopped).
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *Proc) start(ctx context.Context) error {
	bin, err := Binary()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(p.opts.DataDir)), 0o755); err != nil {
		return fmt.Errorf("etcdproc: %w", err)
	}
	cluster := p.opts.InitialCluster
	if cluster == "" {
		cluster = p.opts.Name + "=" + p.opts.PeerURL
	}
	args := []string{
		"--name", p.opts.Name,
		"--data-dir", p.opts.DataDir,
		"--listen-client-urls", p.opts.ClientURL,
		"--advertise-client-urls", p.opts.ClientURL,
		"--listen-peer-urls", p.opts.PeerURL,
		"--initial-advertise-peer-urls", p.opts.PeerURL,
		"--initial-cluster", cluster,
		"--initial-cluster-state", "new",
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
	}
	args = append(args, p.opts.TLS.args()...)
	args = append(args, p.opts.ExtraArgs...)
	name := bin
	if p.opts.Netns != "" {
		args = append([]string{"netns", "exec", p.opts.Netns, bin}, args...)
		name = "ip"
	}
	logf, err := os.OpenFile(p.opts.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("etcdproc: open log: %w", err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("etcdproc: start %s: %w", bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	return p.waitReady(ctx, done)
}

func (p *Proc) waitReady(ctx context.Context, done <-chan struct{}) error {
	u, err := url.Parse(p.opts.ClientURL)
	if err != nil {
		return fmt.Errorf("etcdproc: bad client URL: %w", err)
	}
	deadline := time.Now().Add(p.opts.ReadyTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("etcdproc: etcd exited during start-up (see %s)", p.opts.LogFile)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if p.opts.Netns == "" {
			c, err := net.DialTimeout("tcp", u.Host, 200*time.Millisecond)
			if err == nil {
				c.Close()
				return nil
			}
		} else if exec.Command("ip", "netns", "exec", p.opts.Netns, "bash", "-c",
			"exec 3<>/dev/tcp/"+u.Hostname()+"/"+u.Port()).Run() == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("etcdproc: etcd not ready on %s after %v (see %s)", p.opts.ClientURL, p.opts.ReadyTimeout, p.opts.LogFile)
}

// Kill sends SIGKILL and waits for the process to go.
func (p *Proc) Kill() { p.signal(syscall.SIGKILL) }

// Stop sends SIGTERM and waits (SIGKILL after 10 s).
func (p *Proc) Stop() { p.signal(syscall.SIGTERM) }

func (p *Proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart starts the process again on the same data directory.
func (p *Proc) Restart(ctx context.Context) error {
	p.Stop()
	return p.start(ctx)
}
