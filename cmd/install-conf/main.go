// Command install-conf SOURCE DESTINATION installs one file atomically with SOURCE's mode,
// so kubelet never reads half a CNI config or plugin; it sits at upstream's /opt/bin/install-conf.
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
