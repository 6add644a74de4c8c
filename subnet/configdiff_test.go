package subnet

import (
	"strings"
	"testing"
)

func TestChangedKeys(t *testing.T) {
	cases := []struct {
		old, new string
		want     string // the changes' String()s joined by "; "
	}{
		{`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`, `{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`,
			`Backend.Type: vxlan -> host-gw`},
		{`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`, "{\n  \"backend\": {\"type\": \"vxlan\"},\n  \"network\": \"10.5.0.0/16\"\n}", ``},
		{`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":1}}`, `{"Network":"10.6.0.0/16","SubnetLen":26,"Backend":{"Type":"vxlan","Port":4789}}`,
			`Backend.Port: (absent) -> 4789; Backend.VNI: 1 -> (absent); Network: 10.5.0.0/16 -> 10.6.0.0/16; SubnetLen: (absent) -> 26`},
		{`{"Network":"10.5.0.0/16"}`, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`, `Backend.Type: (absent) -> vxlan`},
		{`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`, `{"Network":"10.5.0.0/16","Backend":"vxlan"}`, `Backend: {"Type":"vxlan"} -> vxlan`},
		{`{"Network":"10.5.0.0/16","subnetlen":24}`, `{"Network":"10.5.0.0/16","SubnetLen":"24"}`, `SubnetLen: 24 -> "24"`},
		{`{"Network":"10.5.0.0/16"}`, `{"Network":`, `the config: {"Network":"10.5.0.0/16"} -> {"Network":`},
		{`{"Network":"10.5.0.0/16"}`, ``, `Network: 10.5.0.0/16 -> (absent)`},
		{`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","ChecksumOffload":"` + strings.Repeat("x", 70) + `"}}`, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`,
			`Backend.ChecksumOffload: ` + strings.Repeat("x", 60) + `… -> (absent)`},
	}
	for _, c := range cases {
		var got []string
		for _, ch := range ChangedKeys(c.old, c.new) {
			got = append(got, ch.String())
		}
		if g := strings.Join(got, "; "); g != c.want {
			t.Errorf("%s -> %s:\n got %s\nwant %s", c.old, c.new, g, c.want)
		}
	}
}
