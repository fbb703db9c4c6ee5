// Package doctor is the format of a node's self-check: rewired publishes it
// on its own pod, "kubectl rewire doctor" reads it.
package doctor

// Annotation holds the JSON Report on the rewired pod.
const Annotation = "rewire.io/doctor"

// Check is one self-check of the node's installation.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Report is a node's self-check.
type Report struct {
	Node    string  `json:"node"`
	Version string  `json:"version"`
	Time    string  `json:"time"` // RFC 3339
	Checks  []Check `json:"checks"`
}

// Healthy reports whether every check passed.
func (r *Report) Healthy() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// Result makes a check from an error.
func Result(name string, err error, ok string) Check {
	if err != nil {
		return Check{Name: name, Detail: err.Error()}
	}
	return Check{Name: name, OK: true, Detail: ok}
}
