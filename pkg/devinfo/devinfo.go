// Package devinfo handles NPWG device-info files: the file a device plugin
// writes per allocated device (dp/) and the per-attachment file a CNI plugin
// reads or writes (cni/), whose content goes to network-status device-info.
package devinfo

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rewire-cni/rewire/pkg/wire"
)

// Capability is the runtimeConfig key carrying the per-attachment file path.
const Capability = "CNIDeviceInfoFile"

// Dir is a device-info base directory (normally /var/run/k8s.cni.cncf.io/devinfo).
type Dir string

func clean(s string) string { return strings.ReplaceAll(s, "/", "-") }

// DPPath is the device plugin's file for a device.
func (d Dir) DPPath(resourceName, deviceID string) string {
	return filepath.Join(string(d), "dp", clean(resourceName)+"-"+clean(deviceID)+"-device.json")
}

// CNIPath is the file for one attachment of a sandbox.
func (d Dir) CNIPath(network, containerID, ifName string) string {
	return filepath.Join(string(d), "cni", clean(network)+"-"+containerID+"-"+ifName+"-device.json")
}

// Prepare copies the device plugin's file for the device to the attachment's
// CNI file (when the device plugin wrote one) and returns the CNI file path.
// The container ID and interface name must be valid (wire.Request.Validate):
// they are parts of the file name.
func (d Dir) Prepare(resourceName, deviceID, network, containerID, ifName string) (string, error) {
	if err := checkNames(containerID, ifName); err != nil {
		return "", err
	}
	dst := d.CNIPath(network, containerID, ifName)
	raw, err := os.ReadFile(d.DPPath(resourceName, deviceID))
	if errors.Is(err, os.ErrNotExist) {
		return dst, nil
	}
	if err != nil {
		return "", fmt.Errorf("reading device-info: %w", err)
	}
	if !json.Valid(raw) {
		return "", fmt.Errorf("device-info %s is not valid JSON", d.DPPath(resourceName, deviceID))
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	return dst, os.WriteFile(dst, raw, 0o444)
}

// checkNames refuses a container ID or interface name that could take an
// attachment's file out of the cni/ dir.
func checkNames(containerID, ifName string) error {
	err := wire.ValidContainerID(containerID)
	if err == nil {
		err = wire.ValidIfName(ifName)
	}
	if err != nil {
		return fmt.Errorf("device-info file: %w", err)
	}
	return nil
}

// Load returns the content of an attachment's CNI file, or nil if none.
func Load(path string) (json.RawMessage, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !json.Valid(raw) {
		return nil, fmt.Errorf("device-info %s is not valid JSON", path)
	}
	return raw, nil
}

// CleanSandbox removes the CNI files of every attachment of a sandbox.
func (d Dir) CleanSandbox(containerID string) error {
	if err := wire.ValidContainerID(containerID); err != nil {
		return fmt.Errorf("device-info files: %w", err) // it is part of a glob pattern
	}
	files, err := filepath.Glob(filepath.Join(string(d), "cni", "*-"+containerID+"-*-device.json"))
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
