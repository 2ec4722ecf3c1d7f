INGEST_PARAMS = dict(
    on_bad_input=CHECKED["on_bad_input"],
    compression=CHECKED["ingest"]["compression"],
    compression_level=CHECKED["ingest"]["compression_level"],
    stage=STAGE_VERSIONS["ingest"],
    name_inputs_in_logs=CHECKED["privacy"]["name_inputs_in_logs"],
)


rule ingest_images:
    """Decode one image modality (DICOM series, volumes, 2D images, patches) into HDF5."""
    input:
        manifest=f"{RESULTS}/{{study}}/manifest.csv",
        info=f"{RESULTS}/{{study}}/cohort.json",
    output:
        data=f"{RESULTS}/{{study}}/ingest/{{image_modality}}.h5",
        problems=f"{RESULTS}/{{study}}/ingest/{{image_modality}}.problems.csv",
    params:
        spec=modality_spec,
        **INGEST_PARAMS,
    threads: 8
    resources:
        mem_mb=memory_mb(8000),
        runtime=360,
    log:
        "logs/{study}/ingest_{image_modality}.log",
    conda:
        ENV
    script:
        "../scripts/ingest.py"


rule ingest_tables:
    """Type-check one table modality (clinical table, EHR events, notes) into parquet."""
    input:
        manifest=f"{RESULTS}/{{study}}/manifest.csv",
        info=f"{RESULTS}/{{study}}/cohort.json",
    output:
        data=f"{RESULTS}/{{study}}/ingest/{{table_modality}}.parquet",
        problems=f"{RESULTS}/{{study}}/ingest/{{table_modality}}.problems.csv",
    params:
        spec=modality_spec,
        **INGEST_PARAMS,
    threads: 1
    resources:
        mem_mb=memory_mb(4000),
        runtime=60,
    log:
        "logs/{study}/ingest_{table_modality}.log",
    conda:
        ENV
    script:
        "../scripts/ingest.py"
