package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/rewire-cni/rewire/pkg/selection"
)

// One owner per address: a pod's address X stays reserved in the IPAM of
// every network it left for as long as its status.podIPs can name X (until
// its DEL), whichever way it left. The cluster network's range holds one
// address, so a pod created on it after the switch would be given X if the
// network had released it.
func TestSwitchKeepsAddressReserved(t *testing.T) {
	for _, tc := range []struct {
		name, mode string
		nad        func(e *env, name string) string
		event      string
	}{
		{"keep-ip", "", func(e *env, name string) string { return e.ptpConf(name) }, "NetworkSwitched"},
		{"readdress", "readdress", func(e *env, name string) string { return e.readdressConf(name) }, "NetworkSwitched"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{clusterRange: [2]int{2, 2}})
			ctx := context.Background()
			e.createNAD("default", "net-b", tc.nad(e, fmt.Sprintf("b-%d", e.n)), nil)
			ann := map[string]string{}
			if tc.mode != "" {
				ann[selection.SwitchModeAnnotation] = tc.mode
			}
			p1 := e.newPod("default", "owner-"+tc.name, ann)
			r, err := e.rt.Add(ctx, p1)
			must(t, err)
			x := primaryIP(t, r)
			setDefaultNetwork(t, p1, "net-b")
			t.Logf("switched: %s", waitEvents(t, p1, tc.event, 1)[0])

			p2 := e.newPod("default", "owner-next-"+tc.name, nil)
			if r, err := e.rt.Add(ctx, p2); err == nil {
				t.Fatalf("a new pod on the network the first one left got %s while the first pod's status names %s", primaryIP(t, r), x)
			} else if !strings.Contains(err.Error(), "no IP addresses available") {
				t.Fatalf("the new pod's ADD failed for another reason than an exhausted range: %v", err)
			}
			// Released exactly at the first pod's DEL.
			must(t, e.rt.Del(ctx, p1))
			r, err = e.rt.Add(ctx, p2)
			must(t, err)
			if got := primaryIP(t, r); got != x {
				t.Fatalf("after the first pod's DEL the new pod got %s, want the released %s", got, x)
			}
			must(t, e.rt.Del(ctx, p2))
			e.assertNoLeaks()
		})
	}
}

// The guard: a network whose IPAM hands out an address that a pod on this
// node holds (two IPAMs on one range, not sharing a store) is refused: the
// ADD rolls back with an error naming the holder, nothing is left of it,
// and the holder keeps its address.
func TestAddressHeldTwiceRefused(t *testing.T) {
	e := newEnv(t, envOpts{clusterRange: [2]int{2, 2}})
	ctx := context.Background()
	c := fmt.Sprintf("c-%d", e.n)
	e.createNAD("default", "net-c", strings.Replace(e.ptpConf(c), `"subnet":"`+e.subnet+`.0/24"`,
		`"subnet":"`+e.subnet+`.0/24","rangeStart":"`+e.subnet+`.2","rangeEnd":"`+e.subnet+`.2"`, 1), nil)
	p1 := e.newPod("default", "holder", nil)
	r, err := e.rt.Add(ctx, p1)
	must(t, err)
	x := primaryIP(t, r)
	p2 := e.newPod("default", "second", map[string]string{selection.DefaultNetworkAnnotation: "net-c"})
	_, err = e.rt.Add(ctx, p2)
	if err == nil || !strings.Contains(err.Error(), x) || !strings.Contains(err.Error(), "default/holder") {
		t.Fatalf("ADD of a pod given the held address %s: %v, want an error naming it and its holder", x, err)
	}
	t.Logf("refused: %v", err)
	if msg := waitEvent(t, p2, "NetworkAddFailed"); !strings.Contains(msg, x) {
		t.Fatalf("NetworkAddFailed event %q does not name %s", msg, x)
	}
	links, err := podLinks(t, p2)
	must(t, err)
	if delete(links, "lo"); len(links) > 0 {
		t.Fatalf("the refused pod kept interfaces: %v", keys(links))
	}
	e.assertPrimary(t, p1, x, fmt.Sprintf("cluster-%d", e.n), []string{fmt.Sprintf("cluster-%d", e.n)}, []string{c})
	must(t, e.rt.Del(ctx, p2))
	must(t, e.rt.Del(ctx, p1))
	e.assertNoLeaks()
}
