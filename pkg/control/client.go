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

// ErrNotRunning means nothing listens on the control socket in this network namespace.
var ErrNotRunning = errors.New("no flanneld runs for it in this network namespace")

// ErrNotRoot means a non-root process holds the socket's name; it is not asked.
var ErrNotRoot = errors.New("the control socket is held by a process that is not root")

const dialTimeout = 5 * time.Second

// Query asks the daemon in this netns whose first instance-lock key is key for its status;
// it returns when ctx ends at the latest.
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
	// A daemon refusing the caller answers without reading, so read even after a failed write.
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

// Found is an instance's control socket and its status, or why it gave none.
type Found struct {
	Socket string
	Status *Status
	Err    error
}

// Instances queries every instance-lock socket in the netns but skip, leaving out sockets
// that another found instance lists among its locks.
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
