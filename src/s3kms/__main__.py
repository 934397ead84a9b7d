from s3kms.cli import main

main()
