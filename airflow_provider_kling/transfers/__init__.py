"""The copy of Kling videos into S3 (``kling_to_s3.KlingToS3Operator``) and its upload engine."""
