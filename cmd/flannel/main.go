// Command flannel is the flannel CNI plugin (pkg/cniplugin), run by a container runtime.
package main

import (
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/flannel-go/flannel/pkg/cniplugin"
)

// set by -ldflags "-X main.version=v0.1.0 -X main.commit=<sha>"
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	about := cniplugin.About(version, commit)
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Println(about)
		return
	}
	p := &cniplugin.Plugin{Stdout: os.Stdout}
	skel.PluginMainFuncs(p.Funcs(), cniversion.All, about)
}
