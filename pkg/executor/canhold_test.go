package executor

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/reservation"
	"github.com/rewire-cni/rewire/pkg/store"
)

// A switch that must keep the old network's addresses reserved is refused
// when the static IPAM plugin is not among the delegates' plugins.
func TestCanHold(t *testing.T) {
	withStatic, without := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(withStatic, reservation.StaticType), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	hostLocal := `{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"10.0.0.0/24"}]]}}]}`
	whereabouts := `{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"macvlan","master":"eth0","ipam":{"type":"whereabouts","range":"10.1.0.0/24"}}]}`
	staticIPAM := `{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"macvlan","master":"eth0","ipam":{"type":"static","addresses":[{"address":"10.2.0.5/24"}]}}]}`
	noIPAM := `{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"}]}`
	dhcp := `{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"macvlan","master":"eth0","ipam":{"type":"dhcp"}}]}`
	flannel := `{"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"flannel","delegate":{"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}`
	for _, tc := range []struct {
		name, conf string
		binDirs    []string
		refused    bool
	}{
		{"static plugin there", hostLocal, []string{without, withStatic}, false},
		{"static plugin missing", hostLocal, []string{without}, true},
		{"whereabouts, static plugin there", whereabouts, []string{withStatic}, false},
		{"whereabouts, static plugin missing", whereabouts, []string{without}, true},
		{"static addresses: nothing to keep reserved", staticIPAM, []string{without}, false},
		{"no IPAM: the plugin's own addresses cannot be kept", noIPAM, []string{withStatic}, true},
		{"DHCP: a lease cannot be kept", dhcp, []string{withStatic}, true},
		{"flannel's built host-local, static plugin there", flannel, []string{withStatic}, false},
		{"flannel's built host-local, static plugin missing", flannel, []string{without}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &Executor{BinDirs: tc.binDirs}
			err := e.canHold(&store.Attachment{Spec: attachment.Spec{Network: "default/a", Config: []byte(tc.conf)}})
			var refused *SwitchRefused
			if errors.As(err, &refused) != tc.refused || (!tc.refused && err != nil) {
				t.Errorf("canHold = %v, refused wanted: %v", err, tc.refused)
			}
		})
	}
}
