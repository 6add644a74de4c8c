package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"syscall"
	"time"

	"github.com/flannel-go/flannel/pkg/instancelock"
)

// ErrNotRunning means nothing listens on the control socket: no daemon for that
// instance-lock key runs in this network namespace.
var ErrNotRunning = errors.New("no flanneld runs for it in this network namespace")

// ErrNotRoot means the control socket's name is held by a process that is not root: not
// a flanneld, so its answer is not asked for.
var ErrNotRoot = errors.New("the control socket is held by a process that is not root")

// dialTimeout bounds the connection (a listener whose backlog is full does not accept).
const dialTimeout = 5 * time.Second

// Query asks the daemon holding the instance-lock key (its first, e.g.
// "etcd-prefix:/coreos.com/network") in the caller's network namespace for its status.
// It checks that the socket's holder is root before it sends anything; the daemon
// checks that the caller is. It returns when ctx ends at the latest.
func Query(ctx context.Context, key string) (*Status, error) {
	return QueryName(ctx, instancelock.Name(key))
}

// QueryName is Query by socket name ("@flannel-go/...").
func QueryName(ctx context.Context, name string) (*Status, error) {
	c, cred, err := instancelock.DialName(name, dialTimeout)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("control socket %s: %w", name, ErrNotRunning)
		}
		return nil, fmt.Errorf("control socket %s: %w", name, err)
	}
	defer c.Close()
	if cred.Uid != 0 {
		return nil, fmt.Errorf("%w: %s is held by pid %d, uid %d", ErrNotRoot, name, cred.Pid, cred.Uid)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	// A daemon refusing the caller answers without reading the request: a failed
	// write, or a reset after the answer, still leaves the answer to read.
	_, werr := io.WriteString(c, Request{Verb: VerbStatus}.String()+"\n")
	data, err := io.ReadAll(io.LimitReader(c, MaxResponse+1))
	if len(data) == 0 {
		switch {
		case ctx.Err() != nil:
			err = ctx.Err()
		case werr != nil:
			err = werr
		case err == nil:
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("control socket %s: no response: %w", name, err)
	}
	st, err := ParseResponse(data)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", name, err)
	}
	return st, nil
}

// Found is a flanneld instance found in the network namespace: its control socket and
// its status, or why it gave none.
type Found struct {
	Socket string
	Status *Status
	Err    error
}

// Instances asks every instance lock socket in the caller's network namespace
// (instancelock.Listening), except those named in skip (the caller's own), for a status.
// A socket another found instance lists among its locks (its second lock, e.g. its
// subnet file's) is a lock only and left out; every other socket is in the result, with
// the status it gave or its error. Each query ends with ctx at the latest.
func Instances(ctx context.Context, skip []string) ([]Found, error) {
	names, err := instancelock.Listening()
	if err != nil {
		return nil, err
	}
	var found []Found
	locks := map[string]bool{}
	for _, name := range names {
		if slices.Contains(skip, name) {
			continue
		}
		st, err := QueryName(ctx, name)
		found = append(found, Found{Socket: name, Status: st, Err: err})
		if st != nil {
			for _, k := range st.Instance.Locks {
				if n := instancelock.Name(k); n != name {
					locks[n] = true
				}
			}
		}
	}
	return slices.DeleteFunc(found, func(f Found) bool { return f.Status == nil && locks[f.Socket] }), nil
}
