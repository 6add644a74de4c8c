package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"k8s.io/klog/v2"

	"github.com/flannel-go/flannel/pkg/instancelock"
)

const (
	requestTimeout = 5 * time.Second  // to send the request line
	statusTimeout  = 30 * time.Second // to gather the status (the reconcile loop may be busy)
	writeTimeout   = 30 * time.Second // to take the response
)

// Server answers requests on the control socket.
type Server struct {
	Status func(ctx context.Context) (*Status, error) // returns when ctx ends at the latest
	uid    func(*net.UnixConn) (uint32, error)        // the peer's user ID; nil: peerUID
}

// Handle serves one connection; a non-root peer gets an error only. It returns within the
// timeouts above whatever the peer does.
func (s *Server) Handle(c *net.UnixConn) {
	uid := s.uid
	if uid == nil {
		uid = peerUID
	}
	id, err := uid(c)
	if err != nil {
		s.reply(c, Response{Error: fmt.Sprintf("cannot tell who is asking: %v", err)})
		return
	}
	if id != 0 {
		s.reply(c, Response{Error: "permission denied: the control socket answers root only"})
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
	line, err := bufio.NewReaderSize(io.LimitReader(c, MaxRequest+1), MaxRequest+1).ReadSlice('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		if errors.Is(err, bufio.ErrBufferFull) {
			s.reply(c, Response{Error: fmt.Sprintf("request longer than %d bytes", MaxRequest)})
		}
		return // timed out, or the peer went away (a daemon asking who holds the lock)
	}
	if len(line) == 0 {
		return
	}
	req, err := ParseRequest(line)
	if err != nil {
		s.reply(c, Response{Error: err.Error()})
		return
	}
	switch req.Verb {
	case VerbStatus:
		ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
		defer cancel()
		st, err := s.Status(ctx)
		if err != nil {
			s.reply(c, Response{Error: fmt.Sprintf("gathering the status: %v", err)})
			return
		}
		s.reply(c, Response{Status: st})
	}
}

func (s *Server) reply(c *net.UnixConn, r Response) {
	r.SchemaVersion = SchemaVersion
	_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
	w := bufio.NewWriter(c)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		klog.V(2).InfoS("Control socket: reply not sent", "err", err)
		return
	}
	if err := w.Flush(); err != nil {
		klog.V(2).InfoS("Control socket: reply not sent", "err", err)
	}
}

func peerUID(c *net.UnixConn) (uint32, error) {
	cred, err := instancelock.PeerCred(c)
	if err != nil {
		return 0, err
	}
	return cred.Uid, nil
}
