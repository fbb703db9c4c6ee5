package dra

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// Served asks the API server's discovery whether resource.k8s.io/v1 serves
// ResourceClaims (with their status) and ResourceSlices: one GET, without
// client-go's discovery client and the OpenAPI packages it pulls in.
func Served(ctx context.Context, rc *rest.Config) (bool, error) {
	base, _, err := rest.DefaultServerUrlFor(rc)
	if err != nil {
		return false, fmt.Errorf("API server URL: %w", err)
	}
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return false, fmt.Errorf("API client: %w", err)
	}
	url := base.JoinPath("apis", Group, Version).String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return false, fmt.Errorf("GET %s: %w", url, err)
	}
	return servedFrom(resp.StatusCode, body)
}

// servedFrom reads discovery's answer: 404 is "not served".
func servedFrom(status int, body []byte) (bool, error) {
	switch status {
	case http.StatusOK:
	case http.StatusNotFound:
		return false, nil
	default:
		return false, fmt.Errorf("discovery of %s/%s: HTTP %d", Group, Version, status)
	}
	var list metav1.APIResourceList
	if err := json.Unmarshal(body, &list); err != nil {
		return false, fmt.Errorf("discovery of %s/%s: %w", Group, Version, err)
	}
	want := map[string]bool{"resourceclaims": false, "resourceclaims/status": false, "resourceslices": false}
	for _, r := range list.APIResources {
		if _, ok := want[r.Name]; ok {
			want[r.Name] = true
		}
	}
	for _, found := range want {
		if !found {
			return false, nil
		}
	}
	return true, nil
}
