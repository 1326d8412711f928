// Package kagzi holds what belongs to the product as a whole: the API
// contract, openapi.yaml, which the server serves and the tests hold it to.
package kagzi

import _ "embed"

// OpenAPI is the HTTP API contract, openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
