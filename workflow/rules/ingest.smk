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
        manifest=LAYOUT.manifest("{study}"),
        info=LAYOUT.cohort_info("{study}"),
    output:
        data=LAYOUT.ingest("{study}", "{image_modality}", "image"),
        problems=LAYOUT.problems("{study}", "{image_modality}"),
    params:
        spec=PLAN.modality_spec,
        **INGEST_PARAMS,
    threads: 8
    resources:
        mem_mb=memory_mb(8000),
        runtime=360,
    log:
        LAYOUT.log("{study}", "ingest_{image_modality}"),
    conda:
        ENV
    script:
        "../scripts/ingest.py"


rule ingest_tables:
    """Type-check one table modality (clinical table, EHR events, notes) into parquet."""
    input:
        manifest=LAYOUT.manifest("{study}"),
        info=LAYOUT.cohort_info("{study}"),
    output:
        data=LAYOUT.ingest("{study}", "{table_modality}", "table"),
        problems=LAYOUT.problems("{study}", "{table_modality}"),
    params:
        spec=PLAN.modality_spec,
        **INGEST_PARAMS,
    threads: 1
    resources:
        mem_mb=memory_mb(4000),
        runtime=60,
    log:
        LAYOUT.log("{study}", "ingest_{table_modality}"),
    conda:
        ENV
    script:
        "../scripts/ingest.py"
