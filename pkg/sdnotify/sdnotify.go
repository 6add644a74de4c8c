// Package sdnotify sends systemd service notifications (sd_notify) when NOTIFY_SOCKET is set.
package sdnotify

import (
	"fmt"
	"net"
)

// Notify sends state (e.g. "READY=1") to the socket named by notifySocket (the value
// of $NOTIFY_SOCKET). An empty notifySocket means not run by systemd: nothing is sent.
func Notify(notifySocket, state string) error {
	if notifySocket == "" {
		return nil
	}
	addr := &net.UnixAddr{Name: notifySocket, Net: "unixgram"}
	if notifySocket[0] == '@' {
		addr.Name = "\x00" + notifySocket[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("sd_notify: dial %s: %w", notifySocket, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: write: %w", err)
	}
	return nil
}
