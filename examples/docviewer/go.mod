module github.com/sandkit/sandkit/examples/docviewer

go 1.26.8

require (
	github.com/gen2brain/go-fitz v1.24.15
	github.com/stretchr/testify v1.12.1
)

require (
	github.com/ebitengine/purego v0.8.4 // indirect
	github.com/jupiterrider/ffi v0.5.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

replace github.com/sandkit/sandkit => ../..
