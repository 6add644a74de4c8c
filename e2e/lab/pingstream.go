package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// PingStream is a continuous ping from a lab namespace, counting the echoes it loses.
type PingStream struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
}

type lockedWriter struct{ p *PingStream }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// StartPingStream pings dst from ns every interval for up to 10 minutes; call Stop to reap it.
func StartPingStream(ns string, dst netip.Addr, interval time.Duration) (*PingStream, error) {
	if !dst.IsValid() {
		return nil, errors.New("lab: ping stream: no address")
	}
	p := &PingStream{done: make(chan struct{})}
	secs := strconv.FormatFloat(interval.Seconds(), 'f', 3, 64)
	p.cmd = exec.Command("ip", "netns", "exec", ns, "ping", "-n", "-q", "-i", secs, "-W", "1", "-w", "600", dst.String())
	p.cmd.Stdout, p.cmd.Stderr = lockedWriter{p}, lockedWriter{p}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: ping stream: %w", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

var pingStatsRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// Stop ends the ping and returns the requests sent and lost; later calls repeat them.
func (p *PingStream) Stop() (sent, lost int, err error) {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.mu.Lock()
	out := p.out.String()
	p.mu.Unlock()
	m := pingStatsRE.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("lab: no ping statistics in %q", out)
	}
	sent, _ = strconv.Atoi(m[1])
	recv, _ := strconv.Atoi(m[2])
	return sent, sent - recv, nil
}
