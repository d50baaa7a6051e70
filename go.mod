module github.com/misskey-lambda/media-proxy

go 1.26.8

require (
	github.com/h2non/filetype v1.1.3
	golang.org/x/image v0.47.0
	golang.org/x/sync v0.25.0
)

require github.com/aws/aws-lambda-go v1.55.1 // indirect
