package attachment

import (
	"fmt"
	"testing"
)

// ConfList parses each config once while it is among the last parsed.Max
// configs, returns an error naming the network for a bad one, and never
// holds more than parsed.Max lists.
func TestConfListIsParsedOnce(t *testing.T) {
	conf := func(i int) []byte {
		return fmt.Appendf(nil, `{"cniVersion":"1.0.0","name":"n%d","plugins":[{"type":"bridge"}]}`, i)
	}
	a, b := Spec{Network: "a", Config: conf(0)}, Spec{Network: "b", Config: conf(0)}
	la, err := a.ConfList()
	if err != nil {
		t.Fatal(err)
	}
	if lb, _ := b.ConfList(); lb != la {
		t.Error("the same config was parsed twice")
	}
	if l, _ := (&Spec{Config: conf(1)}).ConfList(); l == la || l.Name != "n1" {
		t.Errorf("another config got list %q", l.Name)
	}
	if _, err := (&Spec{Network: "bad", Config: []byte(`{`)}).ConfList(); err == nil || err.Error()[:11] != "network bad" {
		t.Errorf("bad config: %v", err)
	}
	for i := range 3 * parsed.Max {
		if _, err := (&Spec{Config: conf(i)}).ConfList(); err != nil {
			t.Fatal(err)
		}
	}
	if n := parsed.Len(); n > parsed.Max {
		t.Errorf("%d lists kept, at most %d wanted", n, parsed.Max)
	}
}
