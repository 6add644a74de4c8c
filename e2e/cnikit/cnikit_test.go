package cnikit

import (
	"os"
	"strings"
	"testing"
)

// The version the tests expect is the one tools/cni-plugins/build.sh builds.
func TestVersionMatchesBuildScript(t *testing.T) {
	data, err := os.ReadFile("../../tools/cni-plugins/VERSION")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(data)); got != PluginsVersion {
		t.Fatalf("tools/cni-plugins/VERSION is %q, PluginsVersion %q", got, PluginsVersion)
	}
}
