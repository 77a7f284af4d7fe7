# ./ade20k_160k_warmup.py with BEiT's 640x640 crops (mmseg's ade20k_640x640.py).
_base_ = ['./ade20k_160k_warmup.py']
crop_size = (640, 640)
train_pipeline = [dict(step, crop_size=crop_size) if 'crop_size' in step else step for step in _base_.train_pipeline]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
