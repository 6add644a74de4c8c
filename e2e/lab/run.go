package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const cmdTimeout = 60 * time.Second // per helper command (ip, bridge, sh)

// run executes a command and returns its stdout; a failure is a *CmdError.
func run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.String(), &CmdError{Cmd: name + " " + strings.Join(args, " "), Stderr: msg, Err: err}
	}
	return stdout.String(), nil
}

// CmdError is a failed helper command with what it printed.
type CmdError struct {
	Cmd    string
	Stderr string
	Err    error
}

func (e *CmdError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("%s: %v", e.Cmd, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Cmd, e.Err, e.Stderr)
}

func (e *CmdError) Unwrap() error { return e.Err }

func ipn(ctx context.Context, ns string, args ...string) (string, error) {
	if ns == "" {
		return "", errors.New("lab: refusing to run ip in the root network namespace")
	}
	return run(ctx, "ip", append([]string{"-n", ns}, args...)...)
}

type ipStep struct {
	ns   string
	args []string
}

func runIPSteps(ctx context.Context, steps []ipStep) error {
	for _, s := range steps {
		if _, err := ipn(ctx, s.ns, s.args...); err != nil {
			return err
		}
	}
	return nil
}

func nsExec(ctx context.Context, ns string, cmd ...string) (string, error) {
	if ns == "" {
		return "", errors.New("lab: no namespace given")
	}
	if len(cmd) == 0 {
		return "", errors.New("lab: no command given")
	}
	return run(ctx, "ip", append([]string{"netns", "exec", ns}, cmd...)...)
}

// setSysctl writes a sysctl in ns; value must be a plain token.
func setSysctl(ctx context.Context, ns, key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if strings.ContainsAny(value+path, " '\"$`;&|<>\\") {
		return fmt.Errorf("lab: unsafe sysctl %s=%s", key, value)
	}
	_, err := nsExec(ctx, ns, "sh", "-c", "echo "+value+" > "+path)
	return err
}

// isNotFound reports whether an ip/bridge error means the object does not exist.
func isNotFound(err error) bool {
	var ce *CmdError
	if !errors.As(err, &ce) {
		return false
	}
	s := ce.Stderr
	return strings.Contains(s, "Cannot find device") || strings.Contains(s, "does not exist") ||
		strings.Contains(s, "No such file or directory") || strings.Contains(s, "No such process")
}

func netnsPath(ns string) string { return "/run/netns/" + ns }

// DialContext returns a dialer whose sockets are made in ns (no root-namespace route needed).
func DialContext(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			c, err := dialInNetns(ctx, ns, network, addr)
			ch <- result{c, err}
		}()
		select {
		case r := <-ch:
			return r.c, r.err
		case <-ctx.Done():
			go func() { // the dial ends by itself (ctx is passed down); close what it made
				if r := <-ch; r.c != nil {
					r.c.Close()
				}
			}()
			return nil, ctx.Err()
		}
	}
}

// dialInNetns must run on its own goroutine (see inNetns).
func dialInNetns(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := inNetns(ns, func() (net.Conn, error) { return d.DialContext(ctx, network, addr) })
	if err != nil {
		return nil, fmt.Errorf("lab: dial %s in netns %s: %w", addr, ns, err)
	}
	return c, nil
}

// inNetns runs open on a thread in ns. Call it on its own goroutine: a thread that cannot
// switch back exits locked and the runtime discards it.
func inNetns[C io.Closer](ns string, open func() (C, error)) (C, error) {
	var none C
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return none, fmt.Errorf("open own netns: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(netnsPath(ns))
	if err != nil {
		runtime.UnlockOSThread()
		return none, fmt.Errorf("open netns %s: %w", ns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return none, fmt.Errorf("enter netns %s: %w", ns, err)
	}
	c, oerr := open()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it dies with this goroutine.
		if oerr == nil {
			c.Close()
		}
		return none, fmt.Errorf("return from netns %s: %w", ns, err)
	}
	runtime.UnlockOSThread()
	if oerr != nil {
		return none, oerr
	}
	return c, nil
}

// HTTPGet fetches url from inside ns and returns the status code and body.
func HTTPGet(ctx context.Context, ns, url string) (int, string, error) {
	tr := &http.Transport{DialContext: DialContext(ns), DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", fmt.Errorf("lab: %w", err)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("lab: GET %s in %s: %w", url, ns, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		return resp.StatusCode, b.String(), fmt.Errorf("lab: read body of %s: %w", url, err)
	}
	return resp.StatusCode, b.String(), nil
}
