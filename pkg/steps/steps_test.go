package steps

import (
	"context"
	"regexp"
	"testing"
)

func TestTrace(t *testing.T) {
	for _, tc := range []struct {
		name  string
		marks []string
		want  string // the step names, in order, as String lists them
	}{
		{"none", nil, `^$`},
		{"in order", []string{"plan", "exec", "commit"}, `^plan=[0-9.]+ms exec=[0-9.]+ms commit=[0-9.]+ms$`},
		{"repeated name added up once", []string{"exec", "result", "exec"}, `^exec=[0-9.]+ms result=[0-9.]+ms$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, tr := With(context.Background())
			for _, m := range tc.marks {
				Mark(ctx, m)
			}
			if got := tr.String(); !regexp.MustCompile(tc.want).MatchString(got) {
				t.Errorf("String() = %q, want %s", got, tc.want)
			}
			if got := tr.LogValue().String(); got != tr.String() {
				t.Errorf("LogValue() = %q, want String()'s", got)
			}
		})
	}
	Mark(context.Background(), "no trace") // a no-op, not a panic
}
