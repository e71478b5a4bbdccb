# NGC Triton with what the generated python models (preprocess/postprocess) import.
FROM nvcr.io/nvidia/tritonserver:24.10-py3
RUN pip install --no-cache-dir "pillow>=10" "numpy<2"
