//go:build tools

// Package tools pins the helm the chart's tests run: the command below, at the version go.mod requires.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
