package fault

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, spec := range []string{"add:after:net1=kill", "del:before:eth0=fail", "add:after:net1=delay:50ms, plug:routes=fail", ""} {
		if _, err := Parse(spec); err != nil {
			t.Errorf("Parse(%q): %v", spec, err)
		}
	}
	for _, spec := range []string{"add:after:net1", "x=explode", "x=delay", "x=delay:soon"} {
		if _, err := Parse(spec); err == nil || !strings.Contains(err.Error(), "STEP=delay:DURATION") {
			t.Errorf("Parse(%q) = %v, want an error naming the forms", spec, err)
		}
	}
}

func TestAtFiresOnce(t *testing.T) {
	in, err := Parse("a=fail,b=delay:50ms")
	if err != nil {
		t.Fatal(err)
	}
	if err := in.At("a"); err == nil || !strings.Contains(err.Error(), "injected fault at a") {
		t.Errorf("first At(a) = %v", err)
	}
	if err := in.At("a"); err != nil {
		t.Errorf("second At(a) = %v, want nothing (a fault fires once)", err)
	}
	start := time.Now()
	if err := in.At("b"); err != nil || time.Since(start) < 50*time.Millisecond {
		t.Errorf("At(b) = %v after %s, want a 50ms delay", err, time.Since(start))
	}
	start = time.Now()
	_ = in.At("b")
	if time.Since(start) > 40*time.Millisecond {
		t.Errorf("the delay fired twice")
	}
}
