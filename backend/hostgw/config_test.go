package hostgw

import "testing"

func TestCheckConfig(t *testing.T) {
	warns, err := CheckConfig([]byte(`{"Type":"host-gw","DirectRouting":true,"Tpye":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 2 || warns[0].String() != `unknown key "Backend.DirectRouting"` ||
		warns[1].String() != `unknown key "Backend.Tpye" (did you mean "Type"?)` {
		t.Errorf("warnings %v", warns)
	}
	if _, err := CheckConfig([]byte(`{"Type":1}`)); err == nil || err.Error() != `host-gw: Backend.Type must be a string, not the number 1` {
		t.Errorf("got %v", err)
	}
	if w, err := CheckConfig([]byte(`{"type":"HOST-GW"}`)); w != nil || err != nil {
		t.Errorf("got %v, %v", w, err)
	}
}
