package reservation

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/fsutil"
)

// FlannelType is flannel's CNI plugin, a meta plugin that builds its
// delegate's IPAM section (host-local unless its own "ipam" names another
// type) from its subnet file and saves the delegate's config, which its
// DEL replays, as a scratch file per container.
const FlannelType = "flannel"

// flannel's defaults (its plugin's "subnetFile" and "dataDir").
const (
	flannelSubnetFile = "/run/flannel/subnet.env"
	flannelDataDir    = "/var/lib/cni/flannel"
)

func flannelPath(p map[string]interface{}, key, def string) string {
	if v, _ := p[key].(string); v != "" {
		return v
	}
	return def
}

// flannelSubnets are the node subnets of flannel's subnet file
// (FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET): the ranges its IPAM allocates from.
func flannelSubnets(p map[string]interface{}) ([]string, error) {
	path := flannelPath(p, "subnetFile", flannelSubnetFile)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("flannel's subnet file: %w", err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, _ := strings.Cut(s.Text(), "=")
		if k != "FLANNEL_SUBNET" && k != "FLANNEL_IPV6_SUBNET" {
			continue
		}
		_, n, err := net.ParseCIDR(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("flannel's subnet file %s: %s: %w", path, k, err)
		}
		out = append(out, n.String())
	}
	return out, s.Err()
}

// builtSection is the IPAM section flannel gives its delegate for a new
// ADD: its own "ipam" with the type defaulted and the subnet file's ranges.
func builtSection(p map[string]interface{}) (map[string]interface{}, error) {
	subnets, err := flannelSubnets(p)
	if err != nil {
		return nil, err
	}
	ip := ipamOf(p)
	out := map[string]interface{}{}
	for k, v := range ip.section {
		out[k] = v
	}
	out["type"] = ip.typ
	var ranges []interface{}
	for _, s := range subnets {
		ranges = append(ranges, []interface{}{map[string]interface{}{"subnet": s}})
	}
	out["ranges"] = ranges
	return out, nil
}

// Capture records in conf the IPAM section each flannel plugin gave the
// sandbox's delegate (from its scratch file; rebuilt from the subnet file
// when the scratch file is gone), so that the reservation can be released
// without flannel. A section already recorded is kept: a scratch file
// that Hold rewrote names the static IPAM, not the one that allocated.
func Capture(conf []byte, containerID string) ([]byte, error) {
	var errs []error
	out, err := attachment.MutatePlugins(conf, func(p map[string]interface{}) {
		if t, _ := p["type"].(string); t != FlannelType {
			return
		}
		if section, _ := p["ipam"].(map[string]interface{}); section["ranges"] != nil {
			return // recorded already
		}
		section, err := scratchSection(p, containerID)
		if err == nil && section == nil {
			section, err = builtSection(p)
		}
		if err != nil {
			errs = append(errs, err)
			return
		}
		p["ipam"] = section
	})
	if err != nil {
		return nil, err
	}
	return out, errors.Join(errs...)
}

// scratchSection reads the IPAM section of flannel's scratch file for the
// container (nil: no file, or one that holds the static IPAM).
func scratchSection(p map[string]interface{}, containerID string) (map[string]interface{}, error) {
	delegate, path, err := readScratch(p, containerID)
	if err != nil || delegate == nil {
		return nil, err
	}
	section, _ := delegate["ipam"].(map[string]interface{})
	if t, _ := section["type"].(string); t == "" || t == StaticType {
		return nil, nil
	}
	if section["ranges"] == nil {
		return nil, fmt.Errorf("flannel's scratch file %s: its IPAM has no ranges", path)
	}
	return section, nil
}

func readScratch(p map[string]interface{}, containerID string) (map[string]interface{}, string, error) {
	if strings.ContainsAny(containerID, "/\x00") || containerID == "" || containerID == "." || containerID == ".." {
		return nil, "", fmt.Errorf("container ID %q cannot name a flannel scratch file", containerID)
	}
	path := filepath.Join(flannelPath(p, "dataDir", flannelDataDir), containerID)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, path, nil
	}
	if err != nil {
		return nil, path, err
	}
	var delegate map[string]interface{}
	if err := attachment.DecodeJSON(raw, &delegate); err != nil {
		return nil, path, fmt.Errorf("flannel's scratch file %s: %w", path, err)
	}
	return delegate, path, nil
}

// HoldScratch rewrites the scratch file of each flannel plugin of conf for
// the container with the static IPAM in place of its own, so that
// flannel's DEL (which replays that file) removes the interface and
// releases nothing. Idempotent; a missing file is fine (flannel's DEL then
// does nothing).
func HoldScratch(conf []byte, containerID string) error {
	plugins, _, err := decode(conf)
	if err != nil {
		return err
	}
	for _, p := range plugins {
		if t, _ := p["type"].(string); t != FlannelType {
			continue
		}
		delegate, path, err := readScratch(p, containerID)
		if err != nil {
			return err
		}
		if delegate == nil {
			continue
		}
		delegate["ipam"] = map[string]interface{}{"type": StaticType}
		raw, err := json.Marshal(delegate)
		if err != nil {
			return err
		}
		if err := fsutil.WriteAtomic(path, 0o600, bytes.NewReader(raw), false); err != nil {
			return fmt.Errorf("flannel's scratch file: %w", err)
		}
	}
	return nil
}

// Ask returns conf with every flannel plugin asking its delegate's IPAM
// for ips (args.cni.ips in the delegate's config, which flannel passes on
// and host-local honours): flannel declares no "ips" capability, and
// libcni passes runtimeConfig only for declared ones. ok is false when
// conf has no flannel plugin.
func Ask(conf []byte, ips []string) (out []byte, ok bool, err error) {
	out, err = attachment.MutatePlugins(conf, func(p map[string]interface{}) {
		if t, _ := p["type"].(string); t != FlannelType {
			return
		}
		delegate, _ := p["delegate"].(map[string]interface{})
		if delegate == nil {
			delegate = map[string]interface{}{}
		}
		args, _ := delegate["args"].(map[string]interface{})
		if args == nil {
			args = map[string]interface{}{}
		}
		cni, _ := args["cni"].(map[string]interface{})
		if cni == nil {
			cni = map[string]interface{}{}
		}
		cni["ips"], args["cni"], delegate["args"], p["delegate"] = ips, cni, args, delegate
		ok = true
	})
	return out, ok, err
}
