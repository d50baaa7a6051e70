package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// cmdMkBucket creates a bucket on a loopback S3 stand-in, for the S3
// cache-hit scenario:
//
//	load mkbucket -endpoint http://127.0.0.1:P -bucket NAME
//
// Credentials and region come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
// and AWS_REGION.
func cmdMkBucket(args []string) error {
	fs := flag.NewFlagSet("mkbucket", flag.ExitOnError)
	endpoint := fs.String("endpoint", "", "the stand-in's URL")
	bucket := fs.String("bucket", "", "bucket name")
	fs.Parse(args)
	if *endpoint == "" || *bucket == "" {
		return errors.New("mkbucket: -endpoint and -bucket are needed")
	}
	if err := checkLoopback(*endpoint); err != nil {
		return err
	}
	region := os.Getenv("AWS_REGION")
	if region == "" {
		region = "us-east-1"
	}
	c := s3.New(s3.Options{
		Region:       region,
		BaseEndpoint: aws.String(*endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), ""),
		UsePathStyle: true,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: bucket})
	return err
}
