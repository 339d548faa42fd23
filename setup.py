"""gan-assets: a Dagster asset graph that trains and audits GANs on monthly DICOM batches."""

from setuptools import find_packages, setup

# The Dagster family is pinned together: dagster 1.13.28 has no matching dagster-aws, and an
# unpinned install then silently resolves a 2021 dagster-aws.
DAGSTER = ["dagster==1.13.27", "dagster-webserver==1.13.27", "dagster-aws==0.29.27"]

setup(
    name="gan_assets",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(exclude=["gan_assets_tests", "gan_assets_tests.*", "benchmarks"]),
    package_data={"gan_assets": ["report/templates/*", "report/*.json"]},
    python_requires=">=3.11,<3.13",
    install_requires=[
        *DAGSTER,
        "pydicom>=3.0,<4",
        "numpy>=1.26",
        # torch must be installed first as torch==2.13.0 on machines with the CPU wheel on
        # disk (the Makefile does it); this range then installs nothing more.
        "torch>=2.4",
        "scipy>=1.11",
        "pandas>=2.0",
        # Tables (the landing-zone index, manifests) are stored as Parquet with a declared schema.
        "pyarrow>=14",
        "pillow>=10.0",
        "jinja2>=3.1",
        # The monthly report is validated against its JSON schema before it is written.
        "jsonschema>=4",
        "boto3",
        # A process pool that kills and replaces the one worker whose file overran its time limit.
        "pebble>=5.0",
        # Imported by the package directly (they also come with dagster, which may change that).
        "pydantic>=2",
        "universal_pathlib>=0.2",
        # The s3:// filesystem behind UPath: IO managers and the landing zone read S3 through it.
        # A floor, or pip keeps the newest boto3 and falls back to the boto3-era s3fs 0.4, whose
        # S3FileSystem takes other arguments; the aiobotocore-based releases need boto3 to follow.
        "s3fs>=2024.2",
        # Weights are stored as safetensors: a format that cannot carry code, unlike torch's pickle.
        "safetensors>=0.4",
    ],
    extras_require={
        # Decoders for JPEG lossless, JPEG-LS and HTJ2K transfer syntaxes.
        "codecs": ["pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1", "pylibjpeg-openjpeg>=2.3"],
        "prod": ["dagster-postgres==0.29.27", "psycopg2-binary"],
        "test": [
            "pytest>=8",
            "pytest-timeout",
            "moto[server,s3,cloudwatch]>=5",
            "playwright>=1.40",
            # pydicom's larger test-file set (68 files: JPEG 2000, JPEG-LS, RLE, palette, big endian...).
            "pydicom-data",
            "dagster-postgres==0.29.27",
            "psycopg2-binary",
        ],
    },
    entry_points={"console_scripts": ["gan-assets-demo=gan_assets.demo:main"]},
)
