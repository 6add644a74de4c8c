// Command install-conf installs one file atomically: install-conf SOURCE DESTINATION copies
// SOURCE to a temporary file ".<name>.tmp*" beside DESTINATION, gives it SOURCE's
// permission bits and renames it over DESTINATION, so that kubelet never reads a half
// written CNI config and never runs a half written plugin. The DaemonSet's init containers
// run it to install the flannel plugin (/flannel) and the conflist.
//
// It is a program of its own, at upstream's path /opt/bin/install-conf, rather than a mode
// of the plugin: manifests written for upstream's image call it by that name, and the
// plugin's entry point stays what the container runtime drives through CNI_COMMAND.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/flannel-go/flannel/pkg/atomicfile"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run returns the exit status: 0 installed, 1 failed, 2 usage error.
func run(args []string, stderr io.Writer) int {
	if len(args) != 2 || args[0] == "" || args[1] == "" {
		fmt.Fprintln(stderr, "usage: install-conf SOURCE DESTINATION")
		return 2
	}
	if err := atomicfile.Copy(args[0], args[1]); err != nil {
		fmt.Fprintf(stderr, "install-conf: install %s as %s: %v\n", args[0], args[1], err)
		return 1
	}
	return 0
}
